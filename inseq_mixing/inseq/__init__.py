"""inseq integration: importing this package registers every context-mixing method with inseq.

The only subpackage that imports inseq. After ``import inseq_mixing``:
``inseq.load_model(model, "alti").attribute(text).show()``.
"""

from .methods import ATTRIBUTION_CLASSES, INSEQ_METHODS, ROLLED_OUT_BY_DEFAULT, ContextMixingAttribution
from .outputs import LayerwiseMixingSequenceOutput, MixingStepOutput, RolloutMixingSequenceOutput
from .prediction import PREDICTION_CLASSES, PREDICTION_INSEQ_METHODS, PredictionMethodAttribution

__all__ = [
    "ATTRIBUTION_CLASSES",
    "INSEQ_METHODS",
    "PREDICTION_CLASSES",
    "PREDICTION_INSEQ_METHODS",
    "ROLLED_OUT_BY_DEFAULT",
    "ContextMixingAttribution",
    "LayerwiseMixingSequenceOutput",
    "MixingStepOutput",
    "PredictionMethodAttribution",
    "RolloutMixingSequenceOutput",
]
