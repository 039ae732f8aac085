"""The functional API: context-mixing matrices of a model on a batch of token ids."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformers import PreTrainedModel

from .errors import ExtractionError, UnknownMethodError
from .extract import EncoderDecoderAdapter, blocks_of, get_adapter, recording, stacks_of
from .measures import DEFAULT_MEMORY_BUDGET, MEASURES, Measure
from .record import LayerRecord

if TYPE_CHECKING:
    from .encoder_decoder import EncoderDecoderMixing
from .rollout import normalize_rows
from .rollout import rollout as roll_out

ROLLOUT_ALIASES = {"attention_rollout": "attention"}
"""Method names that mean "this measure, rolled out"."""

METHODS: tuple[str, ...] = (*MEASURES, *ROLLOUT_ALIASES)
"""Every method name :func:`context_mixing` accepts."""


def resolve_method(method: str) -> tuple[Measure, bool]:
    """Return the measure behind ``method`` and whether the name itself asks for a rollout.

    Raises:
        UnknownMethodError: If ``method`` is not a known name.
    """
    if method in ROLLOUT_ALIASES:
        return MEASURES[ROLLOUT_ALIASES[method]], True
    if method not in MEASURES:
        raise UnknownMethodError(f"Unknown context-mixing method {method!r}; available: {', '.join(METHODS)}.")
    return MEASURES[method], False


def batched(input_ids: Tensor, attention_mask: Tensor | None, device: torch.device) -> tuple[Tensor, Tensor]:
    """Make ``[batch, seq]`` ids and a 0/1 mask on ``device`` (the mask defaults to all ones)."""
    if input_ids.dim() == 1:
        input_ids = input_ids.unsqueeze(0)
        attention_mask = None if attention_mask is None else attention_mask.reshape(1, -1)
    input_ids = input_ids.to(device)
    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(device=device).long()
    if mask.shape != input_ids.shape:
        raise ValueError(f"attention_mask has shape {tuple(mask.shape)}; expected {tuple(input_ids.shape)}.")
    return input_ids, mask


def model_inputs(
    model: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor | None
) -> tuple[dict[str, Tensor | bool], Tensor]:
    """Batch the inputs, put them on the model's device and return ``(forward kwargs, attention mask)``.

    Causal models get position ids derived from the attention mask, so a left-padded sequence is computed exactly
    as it would be alone.
    """
    input_ids, mask = batched(input_ids, attention_mask, next(model.parameters()).device)
    kwargs: dict[str, Tensor | bool] = {"input_ids": input_ids, "attention_mask": mask}
    if get_adapter(model).is_causal:
        kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp_min(0)
        kwargs["use_cache"] = False
    return kwargs, mask


def record_stacks(
    model: PreTrainedModel,
    forward_kwargs: dict[str, Any],
    measure: Measure,
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    **options: Any,
) -> dict[str, Tensor]:
    """Run one forward pass and return, per stack, every layer's unnormalized matrix ``[batch, layer, query, key]``.

    Each layer's record is turned into its matrix inside the forward pass and dropped.
    """
    adapter = get_adapter(model)
    n_layers = {stack: len(blocks_of(model, stack)) for stack in stacks_of(adapter)}
    out: dict[str, Tensor] = {}
    done: set[tuple[str, int]] = set()

    def on_layer(record: LayerRecord) -> None:
        matrix = measure(record, memory_budget=memory_budget, **options)
        if record.stack not in out:
            out[record.stack] = matrix.new_zeros(matrix.shape[0], n_layers[record.stack], *matrix.shape[1:])
        out[record.stack][:, record.layer_idx] = matrix
        done.add((record.stack, record.layer_idx))

    with recording(model, adapter, on_layer):
        model.base_model(**forward_kwargs)
    for stack, count in n_layers.items():
        missing = [idx for idx in range(count) if (stack, idx) not in done]
        if missing:
            raise ExtractionError(
                f"{type(model).__name__}: {stack} blocks {missing} did not run during the forward pass, so their "
                "records are missing; the adapter's 'blocks' must list the blocks the model calls."
            )
    return out


def per_layer_mixing(
    model: PreTrainedModel,
    input_ids: Int[Tensor, "batch seq"] | Int[Tensor, " seq"],
    measure: Measure,
    *,
    attention_mask: Int[Tensor, "batch seq"] | Int[Tensor, " seq"] | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    **options: Any,
) -> tuple[Float[Tensor, "batch layer query key"], Int[Tensor, "batch seq"]]:
    """Every layer's unnormalized matrix of a single-stack model (padding zeroed) and the attention mask."""
    kwargs, mask = model_inputs(model, input_ids, attention_mask)
    out = record_stacks(model, kwargs, measure, memory_budget=memory_budget, **options)["layers"]
    return mask_padding(out, mask, mask), mask


def mask_padding(mixing: Tensor, query_mask: Tensor, key_mask: Tensor) -> Tensor:
    """Zero the rows of padding queries and the columns of padding keys (extra columns beyond the keys are kept)."""
    valid_keys = key_mask.bool()
    extra = mixing.shape[-1] - valid_keys.shape[-1]
    if extra:
        valid_keys = torch.cat([valid_keys, valid_keys.new_ones(valid_keys.shape[0], extra)], dim=-1)
    return mixing * (query_mask.bool()[:, None, :, None] & valid_keys[:, None, None, :])


def context_mixing(
    model: PreTrainedModel,
    input_ids: Int[Tensor, "batch seq"] | Int[Tensor, " seq"],
    method: str,
    *,
    attention_mask: Int[Tensor, "batch seq"] | Int[Tensor, " seq"] | None = None,
    decoder_input_ids: Int[Tensor, "batch target"] | Int[Tensor, " target"] | None = None,
    decoder_attention_mask: Int[Tensor, "batch target"] | Int[Tensor, " target"] | None = None,
    rollout: bool = False,
    normalize: bool = True,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    **options: Any,
) -> Float[Tensor, "batch layer query key"] | EncoderDecoderMixing:
    """Context-mixing matrices of every layer: how much each token's representation draws on every other token.

    Args:
        model: A Hugging Face model of a supported architecture (bare or with a head), in any dtype and device.
        input_ids: Token ids ``[batch, seq]`` (or ``[seq]``).
        method: One of :data:`METHODS`: ``attention``, ``attention_rollout``, ``attention_norm``,
            ``attention_norm_res``, ``attention_norm_res_ln``, ``globenc``, ``alti``, ``value_zeroing``.
        attention_mask: 1 for real tokens, 0 for padding (left or right); defaults to all ones.
        decoder_input_ids: Encoder-decoder models only: the target prefix fed to the decoder (starting with the
            decoder start token); ``input_ids`` is then the source.
        decoder_attention_mask: Padding mask of ``decoder_input_ids``.
        rollout: Return the rollout through each layer instead of the layer-wise matrices
            (``attention_rollout`` always does).
        normalize: Row-normalize each layer's matrix (the reference implementations' convention). With ``False`` the
            raw scores are returned, and a rollout multiplies the raw matrices (GlobEnc's original aggregation).
        memory_budget: Bytes a measure may use for its per-chunk intermediates; larger inputs are processed in
            more chunks instead of failing.
        **options: Options of the measure itself, e.g. ``similarity="euclidean"`` or ``heads={0: [1, 2]}`` for
            ``value_zeroing`` (see each measure's docstring).

    Returns:
        ``[batch, layer, query, key]`` float32 on the model's device: row = receiving token, column = contributing
        token. Padding rows and columns are 0; for causal models entries with ``key > query`` are 0. Normalized rows
        of real tokens sum to 1. With ``rollout=True`` entry ``l`` is the rollout through layer ``l``.
        Encoder-decoder models return an :class:`~inseq_mixing.encoder_decoder.EncoderDecoderMixing` (encoder,
        decoder self-attention, cross-attention and the ALTI+-style combined rollout; ``rollout`` applies to the
        encoder matrices).

    Raises:
        UnknownMethodError: For an unknown ``method``.
        UnsupportedArchitectureError: If the model's architecture has no adapter.
        DecompositionError: If a layer's decomposition does not reproduce the model's real outputs.

    Example:
        >>> mixing = context_mixing(model, tokenizer("The cat sat", return_tensors="pt").input_ids, "alti")
        >>> mixing.shape  # [1, num_layers, seq, seq]
    """
    measure, is_rollout = resolve_method(method)
    if isinstance(get_adapter(model), EncoderDecoderAdapter):
        from .encoder_decoder import encoder_decoder_mixing

        return encoder_decoder_mixing(
            model, input_ids, decoder_input_ids, measure, attention_mask=attention_mask,
            decoder_attention_mask=decoder_attention_mask, rollout_encoder=rollout or is_rollout, normalize=normalize,
            memory_budget=memory_budget, **options,
        )  # fmt: skip
    mixing, _ = per_layer_mixing(
        model, input_ids, measure, attention_mask=attention_mask, memory_budget=memory_budget, **options
    )
    if normalize:
        mixing = normalize_rows(mixing)
    if rollout or is_rollout:
        mixing = roll_out(mixing, add_identity=not measure.includes_residual, normalize_layers=normalize)
    return mixing
