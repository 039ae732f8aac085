"""Head tools: attention patterns, most-attended tokens, and head ablation or merging that every measure sees."""

from __future__ import annotations

from typing import Any, no_type_check

from jaxtyping import Float, Int
from torch import Tensor
from transformers import PreTrainedModel

from .errors import InvalidInputError
from .extract import EncoderDecoderAdapter, get_adapter, recording
from .extract.heads import ablate_heads, check_heads, merge_heads, mixed_heads
from .inputs import check_model, prepare_inputs
from .record import LayerRecord


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
    adapter = get_adapter(model)
    unknown = set(forward_kwargs) - {"decoder_input_ids", "decoder_attention_mask"}
    if unknown:
        raise TypeError(f"attention_patterns got unknown argument(s) {sorted(unknown)}; it takes decoder_input_ids "
                        "and decoder_attention_mask besides input_ids and attention_mask.")  # fmt: skip
    if isinstance(adapter, EncoderDecoderAdapter):
        stack = "encoder" if stack == "layers" else stack
    inputs = prepare_inputs(model, adapter, input_ids, attention_mask, **forward_kwargs)
    found: dict[str, Tensor] = {}

    def keep(record: LayerRecord) -> None:
        if record.stack == stack and record.layer_idx == layer:
            found["alpha"] = record.attention.alpha.float()

    with recording(model, adapter, keep):
        model.base_model(**inputs.forward)
    if "alpha" not in found:
        raise InvalidInputError(f"No layer {layer} in the {stack!r} stack of {type(model).__name__}.")
    alpha = found["alpha"]
    if head is None:
        return alpha
    return alpha[:, check_heads([head], alpha.shape[1], f"layer {layer}")[0]]


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
