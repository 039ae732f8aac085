"""inseq-mixing: exact, fast context-mixing measures for Transformers, as inseq attribution methods."""

from .errors import DecompositionError, UnknownMethodError, UnsupportedArchitectureError
from .measures import MEASURES
from .mixing import METHODS, context_mixing
from .rollout import normalize_rows, rollout

__version__ = "0.1.0"

__all__ = [
    "MEASURES",
    "METHODS",
    "DecompositionError",
    "UnknownMethodError",
    "UnsupportedArchitectureError",
    "__version__",
    "context_mixing",
    "normalize_rows",
    "rollout",
]
