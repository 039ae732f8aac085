"""Head tools: attention patterns, most-attended tokens, and head ablation or merging that every measure sees."""

from __future__ import annotations

from typing import Any, no_type_check

from jaxtyping import Float, Int
from torch import Tensor
from transformers import PreTrainedModel

from .errors import InvalidInputError
from .extract import EncoderDecoderAdapter, get_adapter
from .extract.heads import ablate_heads, check_heads, merge_heads, mixed_heads
from .inputs import check_model
from .measures import Measure
from .record import LayerRecord
from .run import Request, run


@no_type_check  # validates its own arguments (inputs.py): users get a message, not a type-check error
def attention_patterns(
    model: PreTrainedModel,
    input_ids: Int[Tensor, "batch seq"] | Int[Tensor, " seq"],
    layer: int,
    head: int | None = None,
    *,
    stack: str = "layers",
    attention_mask: Int[Tensor, "batch seq"] | None = None,
    **forward_kwargs: Any,
) -> Float[Tensor, "batch query key"] | Float[Tensor, "batch head query key"]:
    """The attention weights of one head (or all heads) of one layer, from one forward pass.

    Args:
        model: A supported model.
        input_ids: Token ids (the source for encoder-decoders, which also need ``decoder_input_ids``).
        layer: Layer index (0 = first).
        head: Head index, or ``None`` for every head.
        stack: Encoder-decoders: ``"encoder"`` (default for ``"layers"``), ``"decoder"`` or ``"cross"``.
        attention_mask: 1 for tokens, 0 for padding.
        **forward_kwargs: Further model inputs (``decoder_input_ids``, ``decoder_attention_mask``).

    Returns:
        ``[batch, query, key]`` for one head, ``[batch, head, query, key]`` for all; rows sum to 1.
    """
    model = check_model(model)
    unknown = set(forward_kwargs) - {"decoder_input_ids", "decoder_attention_mask"}
    if unknown:
        raise TypeError(f"attention_patterns got unknown argument(s) {sorted(unknown)}; it takes decoder_input_ids "
                        "and decoder_attention_mask besides input_ids and attention_mask.")  # fmt: skip
    if isinstance(get_adapter(model), EncoderDecoderAdapter):
        stack = "encoder" if stack == "layers" else stack
    request = Request(_ONE_LAYER, {"stack": stack, "layer": layer})
    result = run(model, input_ids, [request], attention_mask=attention_mask, **forward_kwargs)
    alpha = result.results[_ONE_LAYER.name]
    if alpha is None:
        raise InvalidInputError(f"No layer {layer} in the {stack!r} stack of {type(model).__name__}.")
    if head is None:
        return alpha
    return alpha[:, check_heads([head], alpha.shape[1], f"layer {layer}")[0]]


class _OneLayerWeights:
    """Keeps the attention weights of one layer of one stack (a cross-layer state: the other layers are dropped)."""

    def __init__(self, *, memory_budget: int, stack: str, layer: int) -> None:
        self.stack, self.layer_idx = stack, layer
        self.alpha: Tensor | None = None

    def layer(self, record: LayerRecord) -> None:
        if record.stack == self.stack and record.layer_idx == self.layer_idx:
            self.alpha = record.attention.alpha.float()

    def result(self, head: object) -> Tensor | None:
        return self.alpha


_ONE_LAYER = Measure("attention_patterns", state=_OneLayerWeights, inseq=False)
"""The run layer's request behind :func:`attention_patterns` (not in the public measure table)."""


@no_type_check  # validates its own arguments (inputs.py): users get a message, not a type-check error
def top_attended(
    model: PreTrainedModel,
    input_ids: Int[Tensor, "batch seq"] | Int[Tensor, " seq"],
    layer: int,
    head: int,
    k: int = 3,
    **kwargs: Any,
) -> tuple[Float[Tensor, "batch query k"], Int[Tensor, "batch query k"]]:
    """For every query, the ``k`` keys head ``head`` of ``layer`` attends to most: ``(weights, key indices)``."""
    pattern = attention_patterns(model, input_ids, layer, head, **kwargs)
    top = pattern.topk(min(k, pattern.shape[-1]), dim=-1)
    return top.values, top.indices


__all__ = ["ablate_heads", "attention_patterns", "merge_heads", "mixed_heads", "top_attended"]
