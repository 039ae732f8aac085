"""Direct, materializing implementations of the definitions in METHODS.md, for testing the fast measures.

Everything here builds the ``[batch, query, key, d_model]`` vectors explicitly, in float64, with its own LayerNorm /
RMSNorm arithmetic (nothing is imported from ``inseq_mixing.measures``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from inseq_mixing.record import LayerRecord, NormRecord


def attention_vectors(record: LayerRecord) -> Tensor:
    """``z_ij = Σ_h α^h_ij (v^h_j W_O^h)`` as a ``[batch, query, key, d_model]`` tensor, head by head."""
    attn = record.attention
    alpha = attn.alpha.double()
    z = 0
    for h in range(alpha.shape[1]):
        f_bkd = attn.values[:, h].double() @ attn.w_o[h].double()
        z = z + alpha[:, h, :, :, None] * f_bkd[:, None, :, :]
    return z


def with_residual(record: LayerRecord, z: Tensor) -> Tensor:
    """``r_ij = z_ij + δ_ij x_i``."""
    r = z.clone()
    n = r.shape[1]
    r[:, range(n), range(n)] += record.residual.double()
    return r


def norm_std(norm: NormRecord) -> Tensor:
    """``σ(y_i)`` of the true input vectors, ``[batch, query]``."""
    y = norm.input.double()
    if norm.kind == "layer":
        second = ((y - y.mean(-1, keepdim=True)) ** 2).mean(-1)
    else:
        second = (y**2).mean(-1)
    return torch.sqrt(second + norm.eps)


def through_norm(norm: NormRecord, v: Tensor) -> Tensor:
    """``γ ⊙ P v / σ(y_i)`` for ``v`` of shape ``[batch, query, ..., d_model]`` (bias excluded)."""
    if norm.kind == "layer":
        v = v - v.mean(-1, keepdim=True)
    if norm.weight is not None:
        v = v * norm.weight.double()
    sigma = norm_std(norm)
    return v / sigma.reshape(*sigma.shape, *([1] * (v.dim() - 2)))


def norm_bias(norm: NormRecord) -> Tensor:
    return norm.bias.double() if norm.bias is not None else torch.zeros(norm.input.shape[-1], dtype=torch.float64)


def output_bias(record: LayerRecord) -> Tensor:
    b_o = record.attention.b_o
    return b_o.double() if b_o is not None else torch.zeros(record.residual.shape[-1], dtype=torch.float64)


def norm_after_residual(record: LayerRecord) -> NormRecord:
    return record.norm2 if record.pre_norm else record.norm1


def naive_measure(record: LayerRecord, name: str) -> Tensor:
    """The unnormalized ``[batch, query, key]`` matrix of measure ``name``, straight from its definition."""
    z = attention_vectors(record)
    if name == "attention":
        return record.attention.alpha.double().mean(1)
    if name == "attention_norm":
        return z.norm(dim=-1)
    r = with_residual(record, z)
    if name == "attention_norm_res":
        return r.norm(dim=-1)
    t = through_norm(norm_after_residual(record), r)
    if name == "attention_norm_res_ln":
        return t.norm(dim=-1)
    if name == "globenc":
        return (t if record.pre_norm else through_norm(record.norm2, t)).norm(dim=-1)
    if name == "alti":
        transformed = r if record.pre_norm else through_norm(record.norm1, r)
        resultant = transformed.sum(2) + alti_bias(record)
        l1 = resultant.abs().sum(-1)[:, :, None] - (resultant[:, :, None] - transformed).abs().sum(-1)
        return l1.clamp_min(0)
    raise KeyError(name)


def alti_bias(record: LayerRecord) -> Tensor:
    """The part of ALTI's resultant that belongs to no token: ``b_O`` (pre-LN) or ``γ₁ P b_O / σ + β₁`` (post-LN)."""
    b_o = output_bias(record)
    if record.pre_norm:
        return b_o
    n = record.residual.shape[1]
    return through_norm(record.norm1, b_o.expand(record.residual.shape[0], n, -1)) + norm_bias(record.norm1)
