"""The functional API: context-mixing matrices of a model on a batch of token ids."""

from __future__ import annotations

from typing import Any, no_type_check

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformers import PreTrainedModel

from .encoder_decoder import EncoderDecoderMixing, encoder_decoder_mixing
from .errors import ExtractionError, InvalidInputError, UnknownMethodError
from .extract import Adapter, EncoderDecoderAdapter, blocks_of, get_adapter, recording, stacks_of
from .inputs import ModelInputs, check_model, prepare_inputs
from .measures import DEFAULT_MEMORY_BUDGET, MEASURES, Measure
from .record import LayerRecord, lowest_precision
from .rollout import mask_padding, normalize_rows
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


def record_stacks(
    model: PreTrainedModel,
    adapter: Adapter | EncoderDecoderAdapter,
    inputs: ModelInputs,
    measure: Measure,
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    **options: Any,
) -> dict[str, Tensor]:
    """Run one forward pass and return, per stack, every layer's raw matrix ``[batch, layer, ..., query, key]``.

    Each layer's record is turned into its matrix inside the forward pass and dropped. Padding rows and columns are
    zeroed and the measure's ``finish`` step applied; rows are not normalized.

    Raises:
        UnknownOptionError: Before anything runs, if ``options`` holds an option the measure does not take.
    """
    layer_options, finish_options = measure.split_options(options)
    n_layers = {stack: len(blocks_of(model, stack)) for stack in stacks_of(adapter)}
    out: dict[str, Tensor] = {}
    dtypes: dict[str, list[torch.dtype]] = {stack: [] for stack in n_layers}
    done: set[tuple[str, int]] = set()

    def on_layer(record: LayerRecord) -> None:
        matrix = measure(record, memory_budget=memory_budget, **layer_options)
        if record.stack not in out:
            out[record.stack] = matrix.new_zeros(matrix.shape[0], n_layers[record.stack], *matrix.shape[1:])
        out[record.stack][:, record.layer_idx] = matrix
        dtypes[record.stack].append(record.compute_dtype)
        done.add((record.stack, record.layer_idx))

    with recording(model, adapter, on_layer):
        model.base_model(**inputs.forward)
    for stack, count in n_layers.items():
        missing = [idx for idx in range(count) if (stack, idx) not in done]
        if missing:
            raise ExtractionError(
                f"{type(model).__name__}: {stack} blocks {missing} did not run during the forward pass, so their "
                "records are missing; the adapter's 'blocks' must list the blocks the model calls."
            )
    for stack, raw in out.items():
        out[stack] = mask_padding(raw, *inputs.masks[stack])
        if measure.finish is not None:
            out[stack] = measure.finish(
                out[stack], inputs.masks[stack][0], lowest_precision(dtypes[stack]), **finish_options
            )
    return out


@no_type_check  # validates its own arguments (inputs.py): users get a message, not a type-check error
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
) -> Float[Tensor, "batch layer query key"] | Float[Tensor, "batch layer head query key"] | EncoderDecoderMixing:
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
        ``[batch, layer, query, key]`` float32 (float64 where a measure computes in a float64 model's precision) on
        the model's device: row = receiving token, column = contributing token. Measures with ``per_head=True``
        return ``[batch, layer, head, query, key]``. Padding rows and columns are 0; for causal models entries with
        ``key > query`` are 0. Normalized rows of real tokens sum to 1. With ``rollout=True`` entry ``l`` is the
        rollout through layer ``l``.
        Encoder-decoder models return an :class:`~inseq_mixing.encoder_decoder.EncoderDecoderMixing` (encoder,
        decoder self-attention, cross-attention and the ALTI+-style combined rollout; ``rollout`` applies to the
        encoder matrices).

    Raises:
        UnknownMethodError: For an unknown ``method``.
        UnknownOptionError: For an option the measure does not take (before anything runs).
        TypeError: If ``model`` is not a loaded model, or the ids are not an integer tensor.
        InvalidInputError: For empty, malformed, out-of-vocabulary or too long inputs (see :mod:`inseq_mixing.inputs`).
        UnsupportedArchitectureError: If the model's architecture has no adapter.
        ExtractionError: If the model's structure does not match its adapter.
        DecompositionError: If a layer's decomposition does not reproduce the model's real outputs.

    Example:
        >>> mixing = context_mixing(model, tokenizer("The cat sat", return_tensors="pt").input_ids, "alti")
        >>> mixing.shape  # [1, num_layers, seq, seq]
    """
    model = check_model(model)
    adapter = get_adapter(model)
    measure, is_rollout = resolve_method(method)
    measure.split_options(options)  # unknown options fail here, before the inputs are even looked at
    if options.get("per_head") and (rollout or is_rollout):
        raise InvalidInputError(
            f"{method} with per_head=True cannot be rolled out (a rollout multiplies whole-layer matrices); pass "
            "rollout=False for per-head matrices, or drop per_head for the rollout."
        )
    inputs = prepare_inputs(model, adapter, input_ids, attention_mask, decoder_input_ids, decoder_attention_mask)
    raw = record_stacks(model, adapter, inputs, measure, memory_budget=memory_budget, **options)
    if isinstance(adapter, EncoderDecoderAdapter):
        return encoder_decoder_mixing(raw, inputs, measure, rollout_encoder=rollout or is_rollout, normalize=normalize)
    mixing = raw["layers"]
    if normalize:
        mixing = normalize_rows(mixing)
    if rollout or is_rollout:
        mixing = roll_out(mixing, add_identity=not measure.includes_residual, normalize_layers=normalize)
    return mixing
