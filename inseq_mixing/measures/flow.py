"""Information-flow contributions: every edge of a layer's graph as an L1 proximity share (Ferrando & Voita, 2024).

Ferrando & Voita, "Information Flow Routes: Automatically Interpreting Language Models at Scale", EMNLP 2024
(https://aclanthology.org/2024.emnlp-main.965); reference tool: facebookresearch/llm-transparency-tool.

For a block whose attention and FFN add to the residual stream (pre-LN, parallel), at receiving position ``i``:

- attention step: the parts are ``p_{j,h} = q_i α^h_ij f^h(x_j)`` for every key ``j`` and head ``h`` (value bias inside
  each head's part, once; ``q_i`` and the linear part of a post-attention norm where there is one) and the residual
  ``x_i``; the whole is the stream after attention ``m_i`` (``b_O`` in no part);
- FFN step: the parts are the FFN's output and ``m_i``; the whole is the block output.

A part's contribution is ``c_p = max(0, ‖whole‖₁ − ‖whole − p‖₁)``, divided by the sum over the node's parts. The
``[query, key, d_model]`` vectors are formed per head in blocks under ``memory_budget``; no
``[query, key, head, d_model]`` tensor exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from ..errors import InvalidInputError
from ..record import LayerRecord
from ._chunks import DEFAULT_MEMORY_BUDGET
from ._decompose import attention_parts

PROXIMITY_FLOOR = 0.0
"""The clip of ``‖whole‖₁ − ‖whole − p‖₁`` (METHODS.md: 0; the reference tool uses 1e-5, see ``tool_compatible``)."""


@dataclass(frozen=True)
class FlowContributions:
    """Normalized contributions (each receiving node's parts sum to 1) of one layer, or of every layer with a
    ``layer`` dimension after ``batch`` (:func:`inseq_mixing.flow_contributions`).

    Attributes:
        attention: ``[batch, (layer,) query, key, head]``: each key and head's share of the stream after attention.
        residual_attention: ``[batch, (layer,) query]``: the residual's share of it.
        ffn: ``[batch, (layer,) query]``: the FFN output's share of the block output.
        residual_ffn: ``[batch, (layer,) query]``: the stream after attention's share of the block output.
    """

    attention: Float[Tensor, "*batch query key head"]
    residual_attention: Float[Tensor, "*batch query"]
    ffn: Float[Tensor, "*batch query"]
    residual_ffn: Float[Tensor, "*batch query"]


def _proximity(whole: Tensor, part: Tensor, floor: float, eps: float) -> Tensor:
    """``max(floor, ‖whole‖₁ − ‖whole − part + eps‖₁)`` along the last dimension."""
    distance = (whole - part + eps).abs().sum(-1) if eps else (whole - part).abs().sum(-1)
    return (whole.abs().sum(-1) - distance).clamp_min(floor)


def flow_contributions_of(
    record: LayerRecord,
    *,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    floor: float = PROXIMITY_FLOOR,
    eps: float = 0.0,
    value_bias_in_parts: bool = True,
) -> FlowContributions:
    """The layer's edge contributions (see the module docstring).

    Args:
        record: One layer's record (of a block that adds to the residual stream).
        memory_budget: Bytes one ``[key, query, d_model]`` block may use.
        floor: The clip of each proximity (0; the reference tool's 1e-5 for compatibility).
        eps: Added to each difference before the L1 norm (0; ``torch.pairwise_distance``'s 1e-6 for compatibility).
        value_bias_in_parts: Keep each head's value bias inside its parts (the definition); ``False`` leaves it in no
            part, as the reference tool does when it loads models its usual way (its issue #35).

    Raises:
        InvalidInputError: For post-LN blocks and cross-attention, where the stream is not a sum of these parts.
    """
    if not record.form.adds_to_stream or record.form.cross_attention:
        raise InvalidInputError(
            f"information-flow routes decompose blocks that add to one residual stream (pre-LN or parallel decoders); "
            f"this model's {record.stack} blocks are {record.form.describe()}."
        )
    parts = attention_parts(record)
    dtype = torch.float64 if record.compute_dtype == torch.float64 else torch.float32
    x = record.residual.to(dtype)
    added = record.attention.output if record.post_attention_norm is None else record.post_attention_norm.output
    middle = x + added.to(dtype)  # the real stream after attention
    f_bhkd = parts.head_vectors().to(dtype)
    if not value_bias_in_parts:
        if record.attention.w_v is None:
            raise InvalidInputError("value_bias_in_parts=False needs the value projection: record the FFN too.")
        if record.attention.b_v is not None:  # the value bias through W_O, taken out of every part
            bias_hd = torch.einsum("he,hed->hd", record.attention.b_v.to(dtype), parts.w_o.to(dtype))
            f_bhkd = f_bhkd - bias_hd[None, :, None, :]
    alpha = parts.alpha.to(dtype) * parts.query_scale.to(dtype)[:, None, :, None]  # [b, h, q, k]
    batch, n_heads, n_queries, n_keys = alpha.shape
    d_model = f_bhkd.shape[-1]
    # Parts no query weights (a causal model's future) score the floor without being formed.
    attention = torch.full((batch, n_queries, n_keys, n_heads), floor, dtype=dtype, device=x.device)
    keys_per_block = max(1, min(n_keys, memory_budget // (dtype.itemsize * n_queries * d_model)))
    weighted_bqk = (alpha != 0).any(dim=1)
    for b in range(batch):
        for start in range(0, n_keys, keys_per_block):
            keys = slice(start, min(start + keys_per_block, n_keys))
            rows = weighted_bqk[b, :, keys].any(dim=1).nonzero().reshape(-1)  # queries that weight these keys
            if rows.numel() == 0:
                continue
            whole_q1d = middle[b, rows][:, None]
            for h in range(n_heads):
                part_qkd = alpha[b, h, rows, keys, None] * f_bhkd[b, h, None, keys]
                attention[b, rows, keys, h] = _proximity(whole_q1d, part_qkd, floor, eps)
    residual = _proximity(middle, x, floor, eps)
    total = attention.sum(dim=(-1, -2)) + residual
    attention, residual = attention / total[..., None, None], residual / total
    out = record.output.to(dtype)
    ffn_added = (record.ffn_output if record.post_ffn_norm is None else record.post_ffn_norm.output).to(dtype)
    ffn, resid_ffn = _proximity(out, ffn_added, floor, eps), _proximity(out, middle, floor, eps)
    total_ffn = ffn + resid_ffn
    return FlowContributions(attention, residual, ffn / total_ffn, resid_ffn / total_ffn)
