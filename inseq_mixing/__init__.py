"""inseq-mixing: exact, fast context-mixing measures for Transformers, as inseq attribution methods."""

from importlib.util import find_spec

from .errors import (
    DecompositionError,
    ExtractionError,
    InvalidInputError,
    OffloadedWeightsError,
    UnknownMethodError,
    UnknownOptionError,
    UnsupportedArchitectureError,
)
from .evaluation import EvaluationResult, evaluate
from .extract import Adapter, EncoderDecoderAdapter, register_adapter
from .gradients import HiddenTokenAttribution, hidden_token_attribution
from .information_flow import flow_contributions, routes
from .measures import MEASURES, Measure, register_measure
from .mixing import METHODS, context_mixing
from .prediction import PredictionAttribution, attribute_prediction
from .rollout import normalize_rows, rollout

__version__ = "0.1.0"

if find_spec("inseq") is not None:  # register the inseq methods wherever inseq is installed
    from . import inseq as _inseq_methods  # noqa: F401

__all__ = [
    "MEASURES",
    "METHODS",
    "Adapter",
    "DecompositionError",
    "EncoderDecoderAdapter",
    "EvaluationResult",
    "ExtractionError",
    "HiddenTokenAttribution",
    "InvalidInputError",
    "Measure",
    "OffloadedWeightsError",
    "PredictionAttribution",
    "UnknownMethodError",
    "UnknownOptionError",
    "UnsupportedArchitectureError",
    "__version__",
    "attribute_prediction",
    "context_mixing",
    "evaluate",
    "flow_contributions",
    "hidden_token_attribution",
    "normalize_rows",
    "register_adapter",
    "register_measure",
    "rollout",
    "routes",
]
