"""A straightforward implementation of the L2 and ALTI measures, as published code computes them: every layer's
``[query, key, d_model]`` vectors are built explicitly (float32). Used by the benchmark for comparison only."""

from __future__ import annotations

import torch
from torch import Tensor

from inseq_mixing.record import LayerRecord, NormRecord


def _through(norm: NormRecord, v: Tensor) -> Tensor:
    y = norm.input.float()
    if norm.kind == "layer":
        v = v - v.mean(-1, keepdim=True)
        sigma = (y.var(-1, unbiased=False) + norm.eps).sqrt()
    else:
        sigma = (y.pow(2).mean(-1) + norm.eps).sqrt()
    if norm.weight is not None:
        v = v * norm.weight.float()
    return v / sigma[:, :, None, None]


def materializing_measure(record: LayerRecord, name: str) -> Tensor:
    """``[batch, query, key]`` scores of ``name`` from the explicit ``[batch, query, key, d_model]`` vectors."""
    attn = record.attention
    f_bhkd = torch.einsum("bhke,hed->bhkd", attn.values.float(), attn.w_o.float())
    z_bqkd = torch.einsum("bhqk,bhkd->bqkd", attn.alpha.float(), f_bhkd)
    if name == "attention_norm":
        return z_bqkd.norm(dim=-1)
    n = z_bqkd.shape[1]
    z_bqkd[:, range(n), range(n)] += record.residual.float()
    if name == "attention_norm_res":
        return z_bqkd.norm(dim=-1)
    if name in ("attention_norm_res_ln", "globenc"):
        for norm in record.norms(record.form.norms_to("ffn_input")):
            z_bqkd = _through(norm, z_bqkd)
        return z_bqkd.norm(dim=-1)
    if name == "alti":
        transformed = z_bqkd
        for norm in record.norms(record.form.norms_to("stream")):
            transformed = _through(norm, transformed)
        resultant = transformed.sum(2, keepdim=True)
        return (resultant.abs().sum(-1) - (resultant - transformed).abs().sum(-1)).clamp_min(0)
    raise KeyError(name)
