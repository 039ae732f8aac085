"""What a registered measure declares: its function (or cross-layer state), options, aggregation and reach."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

from ..block import Layout
from ..errors import UnknownOptionError
from ..record import HeadRecord, LayerRecord
from ._chunks import DEFAULT_MEMORY_BUDGET

Aggregation = Literal["layers", "rollout", "rollout_only"]
"""How inseq shows a measure by default: layer-wise, rolled out (``rollout=False`` gives the layers), or always rolled
out (``attention_rollout``)."""

ModelKind = Literal["encoder", "decoder", "encoder-decoder"]
EVERY_KIND: frozenset[ModelKind] = frozenset({"encoder", "decoder", "encoder-decoder"})
EVERY_LAYOUT: frozenset[Layout] = frozenset({"post_ln", "pre_ln", "parallel"})

PASSED_BY_THE_RUN = frozenset({"padding_mask", "explained"})
"""Keyword arguments of a cross-layer state that the run layer (or ``attribute_prediction``) supplies, not users."""


class CrossLayerState(Protocol):
    """A measure that carries a state from one layer to the next (e.g. a per-token decomposition of every hidden
    state), fed the records of one stack in order and asked for its result after the last one.

    Created per forward pass by ``Measure.state(memory_budget=..., **options)``.
    """

    def layer(self, record: LayerRecord) -> None:
        """Take in one layer (records arrive in layer order; each is dropped afterwards)."""

    def result(self, head: HeadRecord | None) -> Tensor:
        """The measure's result after the last layer, given the model's head (``None`` if it was not recorded)."""


@dataclass(frozen=True)
class Measure:
    """A registered measure: everything the run layer, the inseq methods, the CLI and the docs need to know.

    Attributes:
        name: The name used everywhere (function, CLI choice, docs page, inseq method, test ids).
        fn: Per-layer measures: ``fn(record, *, memory_budget, **options) -> [batch, (head,) query, key]``,
            unnormalized, a pure function of one record.
        includes_residual: Whether the per-layer matrix already accounts for the residual connection. Rollout adds
            ``0.5·I`` only to measures that do not (Abnar & Zuidema, 2020).
        aggregation: What inseq shows by default (and whether ``context_mixing`` always rolls out).
        scores_cross_residual: Cross-attention records: the measure scores the residual as its own last column;
            otherwise an empty column is appended (the residual has no attention weight or value to zero).
        finish: Applied once to a stack's raw matrices ``[batch, layer, ..., query, key]`` (padding zeroed) before
            normalization, as ``finish(raw, query_mask, dtype, **options)`` (``dtype``: the lowest precision the
            blocks computed in); ``None`` for none.
        state: Cross-layer measures: ``state(*, memory_budget, **options) -> CrossLayerState`` instead of ``fn``.
        gradient: Measures computed by differentiating the model instead of from the records:
            ``gradient(model, inputs, *, memory_budget, **options) -> result`` (``inputs``: the validated
            :class:`~inseq_mixing.inputs.ModelInputs`), run by the run layer beside the recorded pass.
        kinds: The model kinds the measure supports.
        layouts: The block layouts it supports (``post_ln``, ``pre_ln``, ``parallel``; see :mod:`inseq_mixing.block`).
        needs_ffn: Records must carry the FFN's parts (``LayerRecord.ffn``).
        needs_head: The model's head (final norm, unembedding or classifier) must be recorded.
        inseq: Registered as an inseq attribution method (``attention`` is inseq's own).
        explains: The measure explains a prediction (:func:`inseq_mixing.attribute_prediction`): its state takes
            ``explained`` (what is explained) and returns per-token scores with the named rest.
        maps: The measure is available through :func:`inseq_mixing.context_mixing`; ``False`` for those that only
            explain predictions.
        state_gives_matrices: A cross-layer state's (or gradient measure's) result is ``[batch, layer, query,
            key]`` matrices, masked for padding and normalized by ``context_mixing`` like the per-layer measures'
            (DecompX's maps, HTA); otherwise it is returned as it was made.
        decomposes: An explaining measure's scores plus its rest add up to the explained logit (checked on every
            call); ``False`` for relevance scores without that identity (gradient-weighted rollout).
    """

    name: str
    fn: Callable[..., Tensor] | None = None
    includes_residual: bool = True
    aggregation: Aggregation = "layers"
    scores_cross_residual: bool = False
    finish: Callable[..., Tensor] | None = None
    state: Callable[..., CrossLayerState] | None = None
    gradient: Callable[..., Any] | None = None
    kinds: frozenset[ModelKind] = field(default=EVERY_KIND)
    layouts: frozenset[Layout] = field(default=EVERY_LAYOUT)
    needs_ffn: bool = False
    needs_head: bool = False
    inseq: bool = True
    explains: bool = False
    maps: bool = True
    state_gives_matrices: bool = False
    decomposes: bool = True

    def __post_init__(self) -> None:
        if sum(f is not None for f in (self.fn, self.state, self.gradient)) != 1:
            raise ValueError(
                f"Measure {self.name!r}: declare exactly one of fn (per layer), state (cross-layer) and gradient."
            )

    @property
    def is_cross_layer(self) -> bool:
        return self.state is not None

    @property
    def is_gradient(self) -> bool:
        return self.gradient is not None

    @property
    def whole_model(self) -> bool:
        """The result spans the model (a cross-layer state or a gradient measure), not one layer's matrix."""
        return self.fn is None

    @property
    def per_head(self) -> bool:
        """Whether the measure can return per-head matrices (it takes ``per_head``)."""
        return "per_head" in self.option_names()

    def __call__(self, record: LayerRecord, *, memory_budget: int = DEFAULT_MEMORY_BUDGET, **options: Any) -> Tensor:
        """The per-layer matrix of ``record`` (cross-attention: with the residual's last column)."""
        if self.fn is None:
            raise TypeError(f"{self.name} is computed over the whole model; it has no per-layer function.")
        matrix = self.fn(record, memory_budget=memory_budget, **options)
        if record.form.residual_in_column and not self.scores_cross_residual:
            matrix = torch.cat([matrix, matrix.new_zeros(*matrix.shape[:-1], 1)], dim=-1)
        return matrix

    def option_names(self) -> tuple[str, ...]:
        """Every option the measure takes (``memory_budget`` included)."""
        names = tuple(n for n in _keywords(self.fn or self.state or self.gradient) if n not in PASSED_BY_THE_RUN)
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
        layer_names = set(_keywords(self.fn or self.state or self.gradient)) - PASSED_BY_THE_RUN
        per_layer = {k: v for k, v in options.items() if k in layer_names}
        return per_layer, {k: v for k, v in options.items() if k not in layer_names}


def _keywords(fn: Callable[..., Any] | None) -> tuple[str, ...]:
    """The keyword-only parameters of ``fn`` (a measure's options)."""
    if fn is None:
        return ()
    return tuple(
        name for name, p in inspect.signature(fn).parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY
    )
