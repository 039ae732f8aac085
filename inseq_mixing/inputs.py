"""Checking what a user passes before anything runs, and turning it into the model's forward arguments.

Every public entry point (``context_mixing``, the head tools, the inseq methods) goes through :func:`prepare_inputs`:
bad inputs get a message saying what was wrong and what to pass instead, never a traceback from inside a forward.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from .errors import InvalidInputError
from .extract import Adapter, EncoderDecoderAdapter

POSITION_LIMIT_ATTRS = ("max_position_embeddings", "n_positions", "n_ctx")
"""Config attributes that state how many positions a model was built (or trained) for, in order of preference."""


@dataclass(frozen=True)
class ModelInputs:
    """A validated batch: the forward's keyword arguments and, per record stack, its ``(query, key)`` masks.

    Attributes:
        forward: Keyword arguments of ``model.base_model(...)``.
        masks: ``stack -> (query mask [batch, query], key mask [batch, key])`` with 1 for real tokens.
    """

    forward: dict[str, Any]
    masks: dict[str, tuple[Tensor, Tensor]]


def check_model(model: Any) -> PreTrainedModel:
    """Return ``model`` if it is a loaded Hugging Face model; raise a :class:`TypeError` saying how to load one."""
    if isinstance(model, PreTrainedModel):
        return model
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        raise TypeError(
            f"model must be a loaded transformers model, not the path {str(model)!r}: load it first, e.g. "
            f"AutoModel.from_pretrained({str(model)!r})."
        )
    raise TypeError(f"model must be a transformers PreTrainedModel; got {type(model).__name__}.")


def token_ids(ids: Any, name: str) -> Tensor:
    """Check that ``ids`` is a 1-D or 2-D integer tensor holding at least one token; return it as ``[batch, seq]``."""
    if not isinstance(ids, Tensor):
        raise TypeError(
            f"{name} must be a torch tensor of token ids; got {type(ids).__name__}. Pass e.g. "
            f"torch.tensor([ids]) or tokenizer(text, return_tensors='pt').input_ids."
        )
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"{name} must hold integer token ids; got dtype {ids.dtype}. Use ids.long().")
    if ids.dim() not in (1, 2):
        raise InvalidInputError(f"{name} must be [seq] or [batch, seq]; got shape {tuple(ids.shape)}.")
    ids = ids.unsqueeze(0) if ids.dim() == 1 else ids
    if ids.numel() == 0:
        raise InvalidInputError(
            f"{name} is empty (shape {tuple(ids.shape)}): there is no token to measure. Pass at least one token "
            "(an empty text tokenizes to nothing for tokenizers that add no special tokens)."
        )
    return ids


def padding_mask(mask: Any, ids: Tensor, name: str, ids_name: str) -> Tensor:
    """A ``[batch, seq]`` 0/1 long mask for ``ids`` (all ones when ``mask`` is ``None``), checked."""
    if mask is None:
        return torch.ones_like(ids)
    if not isinstance(mask, Tensor):
        raise TypeError(f"{name} must be a torch tensor of 0/1; got {type(mask).__name__}.")
    mask = mask.reshape(1, -1) if mask.dim() == 1 else mask
    if mask.shape != ids.shape:
        raise InvalidInputError(
            f"{name} has shape {tuple(mask.shape)} but {ids_name} has {tuple(ids.shape)}; they must match."
        )
    if not ((mask == 0) | (mask == 1)).all():
        raise InvalidInputError(
            f"{name} must hold only 0 (padding) and 1 (token); got values {mask.unique().tolist()}."
        )
    empty = (mask.sum(-1) == 0).nonzero().reshape(-1).tolist()
    if empty:
        raise InvalidInputError(
            f"Row(s) {empty} of {name} hold no real token (all padding); remove them from the batch."
        )
    return mask.to(ids.device).long()


def _vocab_size(model: PreTrainedModel) -> int | None:
    embeddings = model.get_input_embeddings()
    return (
        embeddings.num_embeddings if isinstance(embeddings, nn.Embedding) else getattr(model.config, "vocab_size", None)
    )


def _check_ids_in_vocab(model: PreTrainedModel, ids: Tensor, name: str) -> None:
    vocab = _vocab_size(model)
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or (vocab is not None and high >= vocab):
        raise InvalidInputError(
            f"{name} holds ids from {low} to {high} but {type(model).__name__} embeds ids 0 to "
            f"{vocab - 1 if vocab else '?'}; use the tokenizer that belongs to this model."
        )


def position_limit(model: PreTrainedModel, adapter: Adapter) -> int | None:
    """The longest sequence the model embeds (absolute positions) or was built for (computed ones); ``None``: no
    limit (relative positions, or none stated in the config)."""
    if adapter.position_kind == "relative":
        return None
    for attr in POSITION_LIMIT_ATTRS:
        value = getattr(model.config, attr, None)
        if isinstance(value, int) and value > 0:
            return value - adapter.position_offset
    return None


def _check_length(model: PreTrainedModel, adapter: Adapter, mask: Tensor, name: str) -> None:
    limit = position_limit(model, adapter)
    length = mask.shape[-1]
    if limit is None or length <= limit:
        return
    if adapter.position_kind == "absolute":
        raise InvalidInputError(
            f"{name} has {length} positions but {type(model).__name__} embeds at most {limit} "
            "(its learned position table); shorten or split the text."
        )
    warnings.warn(
        f"{name} has {length} positions, more than the {limit} {type(model).__name__} was built for "
        "(config.max_position_embeddings); the model runs, but on positions it was not trained on.",
        stacklevel=4,
    )


def _warn_left_padding(model: PreTrainedModel, adapter: Adapter, mask: Tensor, name: str) -> None:
    """Absolute positions of a model that takes no position ids count padding too: warn when a row starts padded."""
    if adapter.position_kind != "absolute" or adapter.is_causal:
        return
    left_padded = ((mask[:, 0] == 0) & (mask.sum(-1) > 0)).nonzero().reshape(-1).tolist()
    if left_padded:
        warnings.warn(
            f"Row(s) {left_padded} of {name} are left-padded: {type(model).__name__} gives positions to padding "
            "tokens too, so those rows differ from the unpadded sequences. Pad on the right "
            "(tokenizer.padding_side = 'right').",
            stacklevel=4,
        )


def prepare_inputs(
    model: PreTrainedModel,
    adapter: Adapter | EncoderDecoderAdapter,
    input_ids: Any,
    attention_mask: Any = None,
    decoder_input_ids: Any = None,
    decoder_attention_mask: Any = None,
) -> ModelInputs:
    """Check the inputs and build the forward arguments and per-stack masks.

    Causal models get position ids derived from the attention mask, so a left-padded sequence is computed exactly
    as it would be alone; the key/value cache is off.

    Raises:
        TypeError: For ids or masks that are not tensors of the right kind.
        InvalidInputError: For empty, malformed, out-of-vocabulary or too long inputs, all-padding rows, masks of
            another shape, and decoder inputs given to a decoder-only model (or missing for an encoder-decoder).
    """
    device = next(model.parameters()).device
    if model.training:
        warnings.warn(
            f"{type(model).__name__} is in training mode; context mixing is measured in eval mode (no dropout) and "
            "the mode is restored afterwards. Call model.eval() to silence this warning.",
            stacklevel=3,
        )
    ids = token_ids(input_ids, "input_ids").to(device)
    mask = padding_mask(attention_mask, ids, "attention_mask", "input_ids")
    _check_ids_in_vocab(model, ids, "input_ids")
    if isinstance(adapter, EncoderDecoderAdapter):
        if decoder_input_ids is None:
            raise InvalidInputError(
                f"{type(model).__name__} is an encoder-decoder model: pass decoder_input_ids as well (the target "
                "prefix, starting with the decoder start token); input_ids is the source."
            )
        target = token_ids(decoder_input_ids, "decoder_input_ids").to(device)
        target_mask = padding_mask(decoder_attention_mask, target, "decoder_attention_mask", "decoder_input_ids")
        _check_ids_in_vocab(model, target, "decoder_input_ids")
        if target.shape[0] != ids.shape[0]:
            raise InvalidInputError(
                f"input_ids has {ids.shape[0]} rows but decoder_input_ids has {target.shape[0]}; pass one target "
                "per source."
            )
        for name, stream_mask, view in (
            ("input_ids", mask, adapter.encoder),
            ("decoder_input_ids", target_mask, adapter.decoder),
        ):
            _check_length(model, view, stream_mask, name)
            _warn_left_padding(model, view, stream_mask, name)
        forward = {
            "input_ids": ids,
            "attention_mask": mask,
            "decoder_input_ids": target,
            "decoder_attention_mask": target_mask,
            "use_cache": False,
        }
        masks = {"encoder": (mask, mask), "decoder": (target_mask, target_mask), "cross": (target_mask, mask)}
        return ModelInputs(forward=forward, masks=masks)
    if decoder_input_ids is not None or decoder_attention_mask is not None:
        raise InvalidInputError(
            f"decoder_input_ids was given but {type(model).__name__} is not an encoder-decoder model; pass the whole "
            "sequence as input_ids."
        )
    _check_length(model, adapter, mask, "input_ids")
    _warn_left_padding(model, adapter, mask, "input_ids")
    forward: dict[str, Any] = {"input_ids": ids, "attention_mask": mask}
    if adapter.is_causal:
        forward["position_ids"] = (mask.cumsum(-1) - 1).clamp_min(0)
        forward["use_cache"] = False
    return ModelInputs(forward=forward, masks={"layers": (mask, mask)})
