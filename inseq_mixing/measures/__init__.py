"""Context-mixing measures: pure functions from one layer's record to a ``[batch, query, key]`` matrix, or states
carried across layers.

Each measure lives in its own module and is declared once in :data:`MEASURES`; the run layer, the inseq methods,
the CLI, the docs and the parametrized tests read this table.
"""

from __future__ import annotations

from ..block import Layout
from ..gradients.grad_rollout import grad_rollout
from ..gradients.hta import hta
from ._chunks import DEFAULT_MEMORY_BUDGET
from ._measure import EVERY_KIND, EVERY_LAYOUT, Aggregation, CrossLayerState, Measure, ModelKind
from .alti import alti
from .attention import attention
from .attention_norm import attention_norm
from .attention_norm_res import attention_norm_res
from .attention_norm_res_ln import attention_norm_res_ln
from .decompx import DecompX
from .ffn_map import attention_ffn_map, ffn_map
from .globenc import globenc
from .logit import alti_logit_state, logit_state
from .value_zeroing import finish_value_zeroing, value_zeroing

_SINGLE_STACK: frozenset[ModelKind] = frozenset({"encoder", "decoder"})
_SERIAL: frozenset[Layout] = frozenset({"post_ln", "pre_ln"})  # the FFN reads what the attention block mixed

_TABLE = (
    Measure("attention", attention, includes_residual=False, inseq=False),  # inseq's own ``attention`` stays
    Measure("attention_norm", attention_norm, includes_residual=False),
    Measure("attention_norm_res", attention_norm_res, scores_cross_residual=True),
    Measure("attention_norm_res_ln", attention_norm_res_ln, scores_cross_residual=True),
    Measure("globenc", globenc, aggregation="rollout", scores_cross_residual=True),
    Measure("alti", alti, aggregation="rollout", scores_cross_residual=True),
    Measure("value_zeroing", value_zeroing, finish=finish_value_zeroing),
    Measure("ffn_map", ffn_map, includes_residual=False, needs_ffn=True, kinds=_SINGLE_STACK, layouts=_SERIAL),
    Measure("attention_ffn_map", attention_ffn_map, needs_ffn=True, kinds=_SINGLE_STACK, layouts=_SERIAL),
    Measure("attention_rollout", attention, includes_residual=False, aggregation="rollout_only"),
    Measure(
        "decompx",
        state=DecompX,
        needs_ffn=True,
        explains=True,
        state_gives_matrices=True,
        kinds=_SINGLE_STACK,
    ),
    Measure("hta", gradient=hta, state_gives_matrices=True, kinds=_SINGLE_STACK),
    Measure("logit", state=logit_state, kinds=frozenset({"decoder"}), explains=True, maps=False),
    Measure("alti_logit", state=alti_logit_state, kinds=frozenset({"decoder"}), explains=True, maps=False),
    Measure(
        "grad_rollout",
        gradient=grad_rollout,
        kinds=_SINGLE_STACK,
        explains=True,
        maps=False,
        decomposes=False,
    ),
)

MEASURES: dict[str, Measure] = {measure.name: measure for measure in _TABLE}
"""The single registry of measures, keyed by the name used everywhere (function, CLI, docs, inseq method): each
entry declares its function, residual, default aggregation, options, reach and whether it carries a state."""

METHODS: tuple[str, ...] = tuple(name for name, measure in MEASURES.items() if measure.maps)
"""Every method name :func:`inseq_mixing.context_mixing` accepts (the built-in table)."""

PREDICTION_METHODS: tuple[str, ...] = tuple(name for name, measure in MEASURES.items() if measure.explains)
"""Every method name :func:`inseq_mixing.attribute_prediction` accepts."""


def register_measure(measure: Measure) -> None:
    """Make ``measure`` available to :func:`inseq_mixing.context_mixing` under ``measure.name`` (replacing any
    measure of that name). inseq methods are generated from the built-in table when inseq_mixing is imported.

    Raises:
        TypeError: If ``measure`` is not a :class:`Measure`.
    """
    if not isinstance(measure, Measure):
        raise TypeError(f"register_measure expects a Measure; got {type(measure).__name__}.")
    MEASURES[measure.name] = measure


__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "EVERY_KIND",
    "EVERY_LAYOUT",
    "MEASURES",
    "METHODS",
    "PREDICTION_METHODS",
    "Aggregation",
    "CrossLayerState",
    "Measure",
    "ModelKind",
    "alti",
    "attention",
    "attention_ffn_map",
    "attention_norm",
    "attention_norm_res",
    "attention_norm_res_ln",
    "ffn_map",
    "globenc",
    "register_measure",
    "value_zeroing",
]
