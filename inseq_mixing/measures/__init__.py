"""Context-mixing measures: pure functions from one layer's record to a ``[batch, query, key]`` matrix.

Each measure lives in its own module and is registered once in :data:`MEASURES`; the inseq layer, the CLI and
:func:`inseq_mixing.context_mixing` read this table.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..record import LayerRecord
from ._chunks import DEFAULT_MEMORY_BUDGET
from .alti import alti
from .attention import attention
from .attention_norm import attention_norm
from .attention_norm_res import attention_norm_res
from .attention_norm_res_ln import attention_norm_res_ln
from .globenc import globenc
from .value_zeroing import value_zeroing


@dataclass(frozen=True)
class Measure:
    """A registered measure.

    Attributes:
        fn: ``fn(record, *, memory_budget=..., **options) -> [batch, query, key]`` (unnormalized).
        includes_residual: Whether the per-layer matrix already accounts for the residual connection. Rollout adds
            ``0.5·I`` only to measures that do not (Abnar & Zuidema, 2020).
    """

    fn: Callable[..., Tensor]
    includes_residual: bool

    def __call__(self, record: LayerRecord, *, memory_budget: int = DEFAULT_MEMORY_BUDGET, **options: Any) -> Tensor:
        return self.fn(record, memory_budget=memory_budget, **options)


MEASURES: dict[str, Measure] = {
    "attention": Measure(attention, includes_residual=False),
    "attention_norm": Measure(attention_norm, includes_residual=False),
    "attention_norm_res": Measure(attention_norm_res, includes_residual=True),
    "attention_norm_res_ln": Measure(attention_norm_res_ln, includes_residual=True),
    "globenc": Measure(globenc, includes_residual=True),
    "alti": Measure(alti, includes_residual=True),
    "value_zeroing": Measure(value_zeroing, includes_residual=True),
}
"""The single registry of measures, keyed by the name used everywhere (function, CLI, docs, inseq method)."""

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "MEASURES",
    "Measure",
    "alti",
    "attention",
    "attention_norm",
    "attention_norm_res",
    "attention_norm_res_ln",
    "globenc",
    "value_zeroing",
]
