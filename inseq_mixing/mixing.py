"""The functional API: context-mixing matrices of a model on a batch of token ids."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, no_type_check

from jaxtyping import Int
from torch import Tensor
from transformers import PreTrainedModel

from .encoder_decoder import EncoderDecoderMixing, encoder_decoder_mixing
from .errors import InvalidInputError
from .measures import DEFAULT_MEMORY_BUDGET, METHODS, Measure

__all__ = ["METHODS", "context_mixing", "presented", "resolve_method"]
from .rollout import mask_padding, normalize_rows
from .rollout import rollout as roll_out
from .run import Request, RunResult, measure_named, plan, run


def resolve_method(method: str) -> tuple[Measure, bool]:
    """Return the measure behind ``method`` and whether it is always rolled out (``attention_rollout``).

    Raises:
        UnknownMethodError: If ``method`` is not a known name.
    """
    measure = measure_named(method)
    return measure, measure.aggregation == "rollout_only"


@no_type_check  # validates its own arguments (inputs.py): users get a message, not a type-check error
def context_mixing(
    model: PreTrainedModel,
    input_ids: Int[Tensor, "batch seq"] | Int[Tensor, " seq"],
    method: str | Sequence[str],
    *,
    attention_mask: Int[Tensor, "batch seq"] | Int[Tensor, " seq"] | None = None,
    decoder_input_ids: Int[Tensor, "batch target"] | Int[Tensor, " target"] | None = None,
    decoder_attention_mask: Int[Tensor, "batch target"] | Int[Tensor, " target"] | None = None,
    rollout: bool = False,
    normalize: bool = True,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    **options: Any,
) -> Tensor | EncoderDecoderMixing | dict[str, Tensor | EncoderDecoderMixing]:
    """Context-mixing matrices of every layer: how much each token's representation draws on every other token.

    Args:
        model: A Hugging Face model of a supported architecture (bare or with a head), in any dtype and device.
        input_ids: Token ids ``[batch, seq]`` (or ``[seq]``).
        method: One of :data:`METHODS` (``attention``, ``attention_rollout``, ``attention_norm``,
            ``attention_norm_res``, ``attention_norm_res_ln``, ``globenc``, ``alti``, ``value_zeroing``), or a list
            of them: all are computed from ONE forward pass, sharing each layer's record and what their computations
            have in common, and returned as ``{name: result}``.
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
            ``value_zeroing`` (see each measure's docstring); with several methods, each gets the options it takes.

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
    methods = [method] if isinstance(method, str) else list(method)
    requests = plan(methods, options)
    for request in requests:
        if request.layer_options.get("per_head") and (rollout or request.measure.aggregation == "rollout_only"):
            raise InvalidInputError(
                f"{request.measure.name} with per_head=True cannot be rolled out (a rollout multiplies whole-layer "
                "matrices); pass rollout=False for per-head matrices, or drop per_head for the rollout."
            )
    result = run(
        model, input_ids, requests, attention_mask=attention_mask, decoder_input_ids=decoder_input_ids,
        decoder_attention_mask=decoder_attention_mask, memory_budget=memory_budget,
    )  # fmt: skip
    out = {r.measure.name: presented(r, result, rollout=rollout, normalize=normalize) for r in requests}
    return out[method] if isinstance(method, str) else out


def presented(request: Request, result: RunResult, *, rollout: bool, normalize: bool) -> Tensor | EncoderDecoderMixing:
    """One measure's result as :func:`context_mixing` returns it: normalized and rolled out as asked."""
    measure = request.measure
    if measure.whole_model:  # maps carried across layers (DecompX) or differentiated (HTA): every layer below
        maps = result.results[measure.name]
        if not measure.state_gives_matrices:
            return maps
        if rollout:
            raise InvalidInputError(
                f"{measure.name}'s maps already carry every layer below them; drop rollout=True (rollout applies to "
                "per-layer measures)."
            )
        mask = next(iter(result.inputs.masks.values()))
        maps = mask_padding(maps, *mask)
        return normalize_rows(maps) if normalize else maps
    stacks = result.raw[measure.name]
    rolled = rollout or measure.aggregation == "rollout_only"
    if "layers" not in stacks:
        return encoder_decoder_mixing(stacks, result.inputs, measure, rollout_encoder=rolled, normalize=normalize)
    mixing = stacks["layers"]
    if normalize:
        mixing = normalize_rows(mixing)
    if rolled:
        mixing = roll_out(mixing, add_identity=not measure.includes_residual, normalize_layers=normalize)
    return mixing
