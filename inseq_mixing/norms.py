"""Normalization layers as per-token linear maps, given the statistics of the true vectors they normalized.

``LN(y) = γ ⊙ (y − mean(y)) / σ(y) + β`` and ``RMS(y) = γ ⊙ y / σ(y)``: with ``σ`` taken from the TRUE vector, the
map ``v ↦ γ ⊙ P v / σ`` (``P`` centres for LayerNorm, is the identity for RMSNorm) is linear, so any decomposition of
``y`` into parts passes through it exactly.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from .record import NormRecord


def inverse_scale(norm: NormRecord) -> Float[Tensor, "batch query"]:
    """``1 / σ(y)`` of every true input vector: ``1/sqrt(var + eps)`` (LayerNorm) or ``1/sqrt(mean(y²) + eps)`` (RMS).

    Statistics are accumulated in float32 (float64 for float64 models) whatever the model's dtype.
    """
    cached = norm.__dict__.get("_inverse_scale")  # the verification and the measures share one computation
    if cached is not None:
        return cached
    y = norm.input if norm.input.dtype == torch.float64 else norm.input.float()
    if norm.kind == "layer":
        y = y - y.mean(dim=-1, keepdim=True)  # two passes: as exact as torch.var, several times faster on CPU
    scale = torch.rsqrt(y.pow(2).mean(dim=-1) + norm.eps)
    norm.__dict__["_inverse_scale"] = scale  # a record is immutable: its statistics never change
    return scale


def linear_part(norm: NormRecord, v: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch d_model"]:
    """Apply the norm's linear map without the ``1/σ`` scale: ``γ ⊙ (v − mean(v))`` or ``γ ⊙ v``."""
    if norm.kind == "layer":
        v = v - v.mean(dim=-1, keepdim=True)
    if norm.weight is not None:
        v = v * norm.weight.to(torch.float64 if v.dtype == torch.float64 else torch.float32)
    return v


def linearized(norm: NormRecord, v: Float[Tensor, "batch query d_model"]) -> Float[Tensor, "batch query d_model"]:
    """The norm applied to ``v`` with the true inputs' statistics, bias excluded: ``linear_part(v) / σ``."""
    return linear_part(norm, v.float()) * inverse_scale(norm).unsqueeze(-1)


def bias_or_zero(norm: NormRecord, like: Tensor) -> Tensor:
    """The norm's shift β in float32, or zeros shaped like the last dimension of ``like``."""
    if norm.bias is None:
        return torch.zeros(like.shape[-1], dtype=torch.float32, device=like.device)
    return norm.bias.float()
