"""Context-mixing measures: pure functions from one layer's record to a ``[batch, query, key]`` matrix.

Each measure lives in its own module and is registered once in :data:`MEASURES`; the inseq layer, the CLI and
:func:`inseq_mixing.context_mixing` read this table.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from ..errors import UnknownOptionError
from ..record import LayerRecord
from ._chunks import DEFAULT_MEMORY_BUDGET
from .alti import alti
from .attention import attention
from .attention_norm import attention_norm
from .attention_norm_res import attention_norm_res
from .attention_norm_res_ln import attention_norm_res_ln
from .globenc import globenc
from .value_zeroing import finish_value_zeroing, value_zeroing


@dataclass(frozen=True)
class Measure:
    """A registered measure.

    Attributes:
        fn: ``fn(record, *, memory_budget=..., **options) -> [batch, query, key]`` (unnormalized).
        includes_residual: Whether the per-layer matrix already accounts for the residual connection. Rollout adds
            ``0.5·I`` only to measures that do not (Abnar & Zuidema, 2020).
        finish: Applied once to a stack's raw matrices ``[batch, layer, ..., query, key]`` (padding zeroed) before
            any normalization, as ``finish(raw, query_mask, dtype, **options)`` with ``dtype`` the lowest
            precision the blocks computed in and the options its signature names; ``None`` for none.
    """

    fn: Callable[..., Tensor]
    includes_residual: bool
    finish: Callable[..., Tensor] | None = None

    @property
    def name(self) -> str:
        return self.fn.__name__

    def __call__(self, record: LayerRecord, *, memory_budget: int = DEFAULT_MEMORY_BUDGET, **options: Any) -> Tensor:
        return self.fn(record, memory_budget=memory_budget, **options)

    def option_names(self) -> tuple[str, ...]:
        """Every option the measure takes (``memory_budget`` included)."""
        names = _keywords(self.fn)
        return (*names, *(n for n in _keywords(self.finish) if n not in names)) if self.finish else names

    def split_options(self, options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Check ``options`` against the measure's signatures and split them into ``(per-layer, finish)`` options.

        Raises:
            UnknownOptionError: Naming the options the measure does not take and listing those it does.
        """
        unknown = [name for name in options if name not in self.option_names()]
        if unknown:
            raise UnknownOptionError(
                f"{self.name} got unknown option(s) {', '.join(map(repr, unknown))}; its options are: "
                f"{', '.join(self.option_names())}."
            )
        layer_names = _keywords(self.fn)
        per_layer = {k: v for k, v in options.items() if k in layer_names}
        return per_layer, {k: v for k, v in options.items() if k not in layer_names}


def _keywords(fn: Callable[..., Any]) -> tuple[str, ...]:
    """The keyword-only parameters of ``fn`` (a measure's options)."""
    return tuple(
        name for name, p in inspect.signature(fn).parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY
    )


MEASURES: dict[str, Measure] = {
    "attention": Measure(attention, includes_residual=False),
    "attention_norm": Measure(attention_norm, includes_residual=False),
    "attention_norm_res": Measure(attention_norm_res, includes_residual=True),
    "attention_norm_res_ln": Measure(attention_norm_res_ln, includes_residual=True),
    "globenc": Measure(globenc, includes_residual=True),
    "alti": Measure(alti, includes_residual=True),
    "value_zeroing": Measure(value_zeroing, includes_residual=True, finish=finish_value_zeroing),
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
