"""ALTI: Aggregation of Layer-wise Token-to-token Interactions (Ferrando et al., 2022)."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from ..norms import bias_or_zero
from ..record import LayerRecord
from ._chunks import DEFAULT_MEMORY_BUDGET
from ._decompose import apply_linear_parts, attended_sum, attention_parts, row_scale

CPU_BLOCK_BYTES = 2 << 20
"""Upper bound on one ``[key, query, d_model]`` block on CPU: blocks that stay in a core's cache run fastest."""

CPU_BLOCK_QUERIES = 64
"""Queries per block on CPU (several keys per block amortize the per-block overhead)."""


def alti(record: LayerRecord, *, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> Float[Tensor, "batch query key"]:
    """``c_ij = max(0, ‖y_i‖₁ − ‖y_i − T_i(x_j)‖₁)``: how much token j's transformed vector shapes token i's output.

    Ferrando, Gállego & Costa-jussà, "Measuring the Mixing of Contextual Information in the Transformer",
    EMNLP 2022 (https://aclanthology.org/2022.emnlp-main.595); reference code: mt-upc/transformer-contributions.

    Transformed vectors: post-LN blocks decompose through the first norm,
    ``T_i(x_j) = γ₁ ⊙ P(z_ij + δ_ij x_i) / σ(y_i)`` (β₁ and the ``b_O`` share go to the resultant); pre-LN blocks use
    ``T_i(x_j) = z_ij + δ_ij x_i`` and the resultant is the residual stream after attention (a post-attention norm,
    as in Gemma 2, is decomposed into ``z_ij``). In a parallel block the resultant is ``x + Attn``: the FFN's output,
    which reads the block input, is not part of it. The resultant
    ``y_i = Σ_j T_i(x_j) + bias terms`` equals the real output (verified at extraction). The reference code takes
    σ without ε inside the variance; we use the norm's true ``sqrt(var + ε)`` so the resultant is exact (the two
    agree to 1e-7 for BERT's ε = 1e-12).

    The L1 distances need the vectors themselves. They are formed key chunk by key chunk as
    ``ŷ_i − Σ_h α^h_ij L f^h_j`` with one batched matrix product (``ŷ = y/σ``; the scale factors out of the norm),
    in ``[key, query, d_model]`` blocks bounded by ``memory_budget``; queries that put no weight on a chunk
    (the future of a causal model) are skipped.

    Args:
        record: One layer's record.
        memory_budget: Bytes allowed for one chunk's intermediates.

    Cross-attention records (ALTI+, Ferrando et al., 2022, "Towards Opening the Black Box of Neural Machine
    Translation", https://aclanthology.org/2022.emnlp-main.599): the keys are source tokens and the residual (the
    decoder stream entering the cross-attention) gets its own last column, scored by the same rule.

    Returns:
        Non-negative, unnormalized contributions ``[batch, query, key]`` in float32 (``[batch, query, key + 1]``
        for cross-attention; rows are divided by their sum by :func:`inseq_mixing.context_mixing`).
    """
    parts = attention_parts(record)
    norms = record.norms(record.form.norms_to("stream"))
    alpha_bhqk, query_scale_bq = parts.alpha, parts.query_scale
    batch, _, n_queries, n_keys = alpha_bhqk.shape
    f_bhkd = parts.head_vectors(norms)
    x_bqd = apply_linear_parts(norms, record.residual.float())
    d_model = x_bqd.shape[-1]
    scale_bq = row_scale(norms, x_bqd)
    # ŷ_i = y_i / σ_i: the residual, what the attention adds (its sum and bias terms), and β divided by the scale.
    if record.attention.output.dtype == torch.float32:  # the model's own float32 output: nothing to recompute
        post = record.post_attention_norm
        added_bqd = (record.attention.output if post is None else post.output).float()
    else:  # half precision: rebuild the sum in float32, consistent with the float32 parts
        added_bqd = attended_sum(record) + parts.bias
    y_hat_bqd = apply_linear_parts(norms, added_bqd) + x_bqd
    if norms:
        y_hat_bqd = y_hat_bqd + bias_or_zero(norms[-1], x_bqd) / scale_bq[..., None]
    y_norm_bq = y_hat_bqd.abs().sum(-1)
    distance_bqk = y_norm_bq[:, :, None].expand(batch, n_queries, n_keys).clone()
    on_cpu = alpha_bhqk.device.type == "cpu"
    if on_cpu:
        block_bytes = min(memory_budget, CPU_BLOCK_BYTES)
        queries_per_chunk = max(1, min(n_queries, CPU_BLOCK_QUERIES, block_bytes // (4 * d_model)))
        keys_per_chunk = max(1, min(n_keys, block_bytes // (4 * queries_per_chunk * d_model)))
    else:
        block_bytes = memory_budget
        keys_per_chunk = max(1, min(n_keys, block_bytes // (4 * n_queries * d_model)))
        queries_per_chunk = max(1, block_bytes // (4 * keys_per_chunk * d_model))
    for b in range(batch):
        alpha_qkh = alpha_bhqk[b].permute(1, 2, 0)
        if on_cpu:  # one copy (cheap in this order), so that small blocks read contiguous rows
            alpha_qkh = alpha_qkh.float().contiguous()
        f_khd = f_bhkd[b].transpose(0, 1).contiguous()
        weighted_qk = (alpha_bhqk[b] != 0).any(dim=0)
        # The first query that weights each key chunk: earlier queries (a causal model's past) are skipped.
        first_queries = [
            int(weighted_q.nonzero()[0]) if weighted_q.any() else None
            for weighted_q in (weighted_qk[:, start : start + keys_per_chunk].any(dim=1)
                               for start in range(0, n_keys, keys_per_chunk))
        ]  # fmt: skip
        for key_start, first_query in zip(range(0, n_keys, keys_per_chunk), first_queries, strict=True):
            if first_query is None:
                continue
            keys = slice(key_start, min(key_start + keys_per_chunk, n_keys))
            for query_start in range(first_query, n_queries, queries_per_chunk):
                queries = slice(query_start, min(query_start + queries_per_chunk, n_queries))
                alpha_kqh_chunk = alpha_qkh[queries, keys].transpose(0, 1).float()
                if record.post_attention_norm is not None:  # per block: no second full copy of α
                    alpha_kqh_chunk = alpha_kqh_chunk * query_scale_bq[b, queries, None]
                y_hat_kqd = y_hat_bqd[b, queries].expand(alpha_kqh_chunk.shape[0], -1, -1)
                residual_kqd = torch.baddbmm(y_hat_kqd, alpha_kqh_chunk, f_khd[keys], beta=1, alpha=-1)
                distance_bqk[b, queries, keys] = torch.abs(residual_kqd, out=residual_kqd).sum(-1).T
    if record.form.residual_in_column:  # the residual is its own, last column: ‖ŷ_i − L x_i‖₁
        distance_bqk = torch.cat([distance_bqk, (y_hat_bqd - x_bqd).abs().sum(-1)[..., None]], dim=-1)
    else:  # the diagonal carries the residual: ‖ŷ_i − Σ_h α^h_ii L f^h_i − L x_i‖₁
        alpha_diag_bhq = alpha_bhqk.diagonal(dim1=-2, dim2=-1).float() * query_scale_bq[:, None]
        self_bqd = x_bqd.clone()
        for h in range(alpha_diag_bhq.shape[1]):  # per-head passes beat a batched product with one-row matrices
            self_bqd.addcmul_(alpha_diag_bhq[:, h, :, None], f_bhkd[:, h])
        distance_bqk.diagonal(dim1=-2, dim2=-1).copy_((y_hat_bqd - self_bqd).abs().sum(-1))
    return ((y_norm_bq[:, :, None] - distance_bqk) * scale_bq[:, :, None]).clamp_min(0)
