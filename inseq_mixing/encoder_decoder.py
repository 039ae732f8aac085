"""Context mixing of encoder-decoder models: encoder, decoder self-attention, cross-attention and their rollout."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from .inputs import ModelInputs
from .measures import Measure
from .rollout import encoder_decoder_rollout, mask_padding, normalize_rows, rollout


@dataclass(frozen=True)
class EncoderDecoderMixing:
    """Context-mixing matrices of an encoder-decoder model (row = receiving token, column = contributing token).

    Attributes:
        encoder: Encoder self-mixing ``[batch, encoder layer, source, source]`` (its rollout when asked for).
        decoder: Decoder self-attention mixing ``[batch, decoder layer, target, target]``, layer-wise.
        cross: Cross-attention mixing ``[batch, decoder layer, target, source + 1]``, layer-wise; the last column
            is the residual (the decoder stream entering the cross-attention), ALTI+'s ``λ_t`` once normalized.
        combined: The rollout through each decoder layer, ``[batch, decoder layer, target, source + target]``:
            each target token's contributions from every source token (first columns) and every target token
            (last columns; causal). Rows of real target tokens sum to 1. ``None`` for value zeroing, whose
            cross-attention leaves the residual unscored.
    """

    encoder: Float[Tensor, "batch layer source source"]
    decoder: Float[Tensor, "batch layer target target"]
    cross: Float[Tensor, "batch layer target source_1"]
    combined: Float[Tensor, "batch layer target source_target"] | None


def encoder_decoder_mixing(
    raw: dict[str, Tensor],
    inputs: ModelInputs,
    measure: Measure,
    *,
    rollout_encoder: bool = False,
    normalize: bool = True,
) -> EncoderDecoderMixing:
    """Every stack's matrices and the combined rollout, from the raw per-stack matrices of one forward pass.

    The combined rollout follows ALTI+ for every measure: measures that score the residual use their own residual
    column as ``λ_t``; those that do not (``attention``, ``attention_norm``) get the residual rollout's rule,
    ``λ_t = 0.5`` and ``0.5·C + 0.5·I`` for the decoder self-attention. It is computed from row-normalized
    matrices whatever ``normalize`` says.
    """
    encoder, decoder, cross = raw["encoder"], raw["decoder"], raw["cross"]
    target_mask = inputs.masks["decoder"][0]
    combined = None
    scores_residual = not (measure.includes_residual and cross[..., -1].abs().max() == 0)
    if scores_residual:
        combined = _combined(encoder, decoder, cross, measure.includes_residual, target_mask)
    if normalize:
        encoder, decoder, cross = normalize_rows(encoder), normalize_rows(decoder), normalize_rows(cross)
    if rollout_encoder:
        encoder = rollout(encoder, add_identity=not measure.includes_residual, normalize_layers=normalize)
    return EncoderDecoderMixing(encoder=encoder, decoder=decoder, cross=cross, combined=combined)


def _combined(encoder: Tensor, decoder: Tensor, cross: Tensor, includes_residual: bool, target_mask: Tensor) -> Tensor:
    encoder_rollout = rollout(encoder, add_identity=not includes_residual)[:, -1]
    cross, decoder = normalize_rows(cross), normalize_rows(decoder)
    if not includes_residual:  # Abnar & Zuidema's residual rule: half the row to the residual
        cross = torch.cat([0.5 * cross[..., :-1], torch.full_like(cross[..., -1:], 0.5)], dim=-1)
        eye = torch.eye(decoder.shape[-1], dtype=decoder.dtype, device=decoder.device)
        decoder = normalize_rows(decoder + eye)
        cross = cross * target_mask.bool()[:, None, :, None]
        decoder = mask_padding(decoder, target_mask, target_mask)
    return encoder_decoder_rollout(encoder_rollout, cross, decoder)
