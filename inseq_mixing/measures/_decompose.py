"""Shared decomposition machinery: per-head value vectors, norm linearizations and Gram-matrix L2 norms.

For one layer, token ``j`` sends ``z_ij = Σ_h α^h_ij f^h(x_j)`` to token ``i`` with ``f^h(x_j) = v^h_j W_O^h``.
The measures add the residual ``δ_ij x_i`` and pass the result through zero, one or two normalization layers,
each a per-token linear map ``L`` followed by a per-row scale ``1/σ_i`` (see :mod:`._norms`). The L2 norm of
``c_i · L(Σ_h α^h_ij f^h_j + δ_ij x_i)`` is computed from per-key Gram matrices ``G_j[h, g] = ⟨L f^h_j, L f^g_j⟩``,
never from an ``[query, key, d_model]`` tensor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from ..norms import bias_or_zero, inverse_scale, linear_part
from ..record import AttentionRecord, LayerRecord, NormRecord
from ._cache import identity_key, memo
from ._chunks import CPU_SLICE_BYTES, query_chunks


def head_vectors(
    attention: AttentionRecord, dtype: torch.dtype = torch.float32
) -> Float[Tensor, "batch head key d_model"]:
    """``f^h(x_j) = v^h_j W_O^h`` for every head and key, in ``dtype`` (value bias inside, output bias outside)."""
    return torch.einsum("bhke,hed->bhkd", attention.values.to(dtype), attention.w_o.to(dtype))


def apply_linear_parts(norms: Sequence[NormRecord], v: Tensor) -> Tensor:
    """Apply the linear parts (no ``1/σ`` scale, no bias) of ``norms`` in order."""
    for norm in norms:
        v = linear_part(norm, v)
    return v


def row_scale(norms: Sequence[NormRecord], like: Tensor) -> Float[Tensor, "batch query"]:
    """The product of the norms' ``1/σ_i`` per query row (ones without norms); ``like`` is ``[batch, query, ...]``."""
    scale = torch.ones(like.shape[:2], dtype=torch.float32, device=like.device)
    for norm in norms:
        scale = scale * inverse_scale(norm)
    return scale


@dataclass(frozen=True)
class AttentionParts:
    """What the attention adds to the residual stream, split per head and key.

    Token j sends ``q_i · Σ_h α^h_ij f^h_j`` to token i, where ``f^h_j = v^h_j W_O^h`` went through the linear part
    of the post-attention norm (Gemma 2/3, OLMo 2), folded into ``w_o``, and ``q_i`` is that norm's ``1/σ`` of the
    true attention output (1 without such a norm). ``bias`` belongs to no token: the output bias through that
    norm, plus its β.
    """

    alpha: Float[Tensor, "batch head query key"]
    values: Tensor
    w_o: Float[Tensor, "head head_dim d_model"]
    query_scale: Float[Tensor, "batch query"]
    bias: Float[Tensor, "batch query d_model"]

    def head_vectors(self, norms: Sequence[NormRecord] = ()) -> Float[Tensor, "batch head key d_model"]:
        """``L f^h_j`` for every head and key: the norms' linear parts are folded into ``W_O`` (a ``[H, e, d]``
        matrix) rather than applied to the ``[batch, H, key, d]`` vectors. Computed once per chain of norms."""
        return memo(
            self,
            ("head_vectors", identity_key(norms)),
            lambda: torch.einsum("bhke,hed->bhkd", self.values.float(), apply_linear_parts(norms, self.w_o)),
        )


def attention_parts(record: LayerRecord) -> AttentionParts:
    """Split the record's attention (and post-attention norm) into per-head, per-key parts (once per record)."""
    return memo(record, "attention_parts", lambda: _attention_parts(record))


def _attention_parts(record: LayerRecord) -> AttentionParts:
    attention = record.attention
    w_o = attention.w_o.float()
    batch, _, n_queries, _ = attention.alpha.shape
    d_model = w_o.shape[-1]
    b_o = attention.b_o.float() if attention.b_o is not None else w_o.new_zeros(d_model)
    bias_bqd = b_o.expand(batch, n_queries, d_model)
    query_scale = w_o.new_ones(batch, n_queries)
    post = record.post_attention_norm
    if post is not None:
        w_o = linear_part(post, w_o)
        query_scale = inverse_scale(post)
        bias_bqd = linear_part(post, bias_bqd) * query_scale[..., None] + bias_or_zero(post, bias_bqd)
    return AttentionParts(
        alpha=attention.alpha, values=attention.values, w_o=w_o, query_scale=query_scale, bias=bias_bqd
    )


def attended_sum(record: LayerRecord) -> Float[Tensor, "batch query d_model"]:
    """``q_i · Σ_j Σ_h α^h_ij f^h_j`` (no bias) as ``(α V) W_O``: ``n²·d + n·d²`` multiply-adds, not ``n²·H·d``.

    The same sum the per-key parts of :func:`attention_parts` add up to, including the post-attention norm's
    linear part and scale.
    """
    attention = record.attention
    context_bhqe = torch.einsum("bhqk,bhke->bhqe", attention.alpha.float(), attention.values.float())
    out_bqd = torch.einsum("bhqe,hed->bqd", context_bhqe, attention.w_o.float())
    post = record.post_attention_norm
    if post is not None:
        out_bqd = linear_part(post, out_bqd) * inverse_scale(post)[..., None]
    return out_bqd


def transformed_l2_norms(
    parts: AttentionParts,
    *,
    residual: Float[Tensor, "batch query d_model"] | None,
    norms: Sequence[NormRecord],
    memory_budget: int,
    residual_column: bool = False,
) -> Float[Tensor, "batch query key"]:
    """``‖c_i · L(Σ_h α^h_ij f^h_j + δ_ij x_i)‖₂`` for every query ``i`` and key ``j``, via per-key Gram matrices.

    Args:
        parts: The attention's parts (self-attention when ``residual`` is given: queries and keys coincide).
        residual: ``x_i`` added on the diagonal, or ``None`` for no residual.
        norms: Normalization layers applied in order (their linear parts; their ``1/σ`` scales multiply rows).
        memory_budget: Bytes allowed for per-chunk intermediates ``[batch, chunk, key, head]``.
        residual_column: Cross-attention: the residual is not one of the keys; its norm ``‖c_i · L(x_i)‖₂`` is
            returned as an extra last column instead of being added on the diagonal.

    Returns:
        Non-negative norms ``[batch, query, key]`` (``[batch, query, key + 1]`` with ``residual_column``).
    """
    scale_bq = row_scale(norms, parts.bias)
    sq_bqk = attention_quadratic_form(parts, norms, memory_budget)
    if residual is not None and residual_column:
        x_norm_bq = apply_linear_parts(norms, residual.float()).norm(dim=-1) * scale_bq
        own_bqk = sq_bqk.clamp_min(0).sqrt() * scale_bq[..., None]
        return torch.cat([own_bqk, x_norm_bq[..., None]], dim=-1)
    if residual is not None:
        f_bhkd = parts.head_vectors(norms)
        x_bqd = apply_linear_parts(norms, residual.float())
        # ⟨L f^h_i, L x_i⟩ and ‖L x_i‖² enter only the diagonal (the residual is added where j = i).
        cross_bq = torch.einsum("bhq,bhqd,bqd->bq", _alpha_diagonal(parts), f_bhkd, x_bqd)
        sq_bqk = sq_bqk.clone()
        sq_bqk.diagonal(dim1=-2, dim2=-1).add_(2 * cross_bq + x_bqd.pow(2).sum(-1))
    return sq_bqk.clamp_min(0).sqrt() * scale_bq[..., None]


def _alpha_diagonal(parts: AttentionParts) -> Float[Tensor, "batch head query"]:
    """``q_i · α^h_ii``: the attention each token pays itself (the residual's partner on the diagonal)."""
    return parts.alpha.diagonal(dim1=-2, dim2=-1).float() * parts.query_scale[:, None]


def attention_quadratic_form(
    parts: AttentionParts, norms: Sequence[NormRecord], memory_budget: int
) -> Float[Tensor, "batch query key"]:
    """``‖q_i · Σ_h α^h_ij L f^h_j‖²`` (without the norms' ``1/σ`` row scales) for every query and key.

    Computed as ``Σ_{h,g} α^h α^g G_j[h, g]`` from per-key Gram matrices ``G_j[h, g] = ⟨L f^h_j, L f^g_j⟩``, in
    query chunks bounded by ``memory_budget``; once per chain of norms and record, so that measures differing only
    in the residual (``attention_norm`` and ``attention_norm_res``, or GlobEnc and +RES1+LN1 in pre-LN blocks) share
    it. Treat the result as read-only.
    """
    return memo(parts, ("quadratic_form", identity_key(norms)), lambda: _quadratic_form(parts, norms, memory_budget))


def _quadratic_form(parts: AttentionParts, norms: Sequence[NormRecord], memory_budget: int) -> Tensor:
    alpha_bhqk = parts.alpha
    batch, n_heads, n_queries, n_keys = alpha_bhqk.shape
    f_bhkd = parts.head_vectors(norms)
    gram_bkhg = torch.einsum("bhkd,bgkd->bkhg", f_bhkd, f_bhkd)
    # Σ_{h,g} α^h α^g G[h,g] = Σ_h α^h (α^h G[h,h] + Σ_{g>h} α^g 2G[h,g]): H(H+1)/2 fused passes over [query, key].
    coef_bhgk = (gram_bkhg * (2 - torch.eye(n_heads, device=gram_bkhg.device))).permute(0, 2, 3, 1).contiguous()
    out_bqk = torch.zeros(batch, n_queries, n_keys, dtype=torch.float32, device=alpha_bhqk.device)
    budget = memory_budget
    if alpha_bhqk.device.type == "cpu":
        budget = min(budget, CPU_SLICE_BYTES * batch * (n_heads + 2))
    for chunk in query_chunks(n_queries, 4 * batch * n_keys * (n_heads + 2), budget):
        # Keys after the last one any query of the chunk weights score 0 (a causal model's future); one chunk
        # holding every query has nothing to skip.
        n_used = n_keys if chunk.stop - chunk.start == n_queries else _used_keys(alpha_bhqk[:, :, chunk])
        n_used = max(n_used, min(chunk.stop, n_keys))  # the diagonal may carry a residual later
        alpha_bhqk_chunk = alpha_bhqk[:, :, chunk, :n_used].float()
        sq_bqk = alpha_bhqk_chunk.new_zeros(batch, alpha_bhqk_chunk.shape[2], n_used)
        for h in range(n_heads):
            partial_bqk = alpha_bhqk_chunk[:, h] * coef_bhgk[:, h, h, None, :n_used]
            for g in range(h + 1, n_heads):
                partial_bqk.addcmul_(alpha_bhqk_chunk[:, g], coef_bhgk[:, h, g, None, :n_used])
            sq_bqk.addcmul_(alpha_bhqk_chunk[:, h], partial_bqk)
        out_bqk[:, chunk, :n_used] = sq_bqk * parts.query_scale[:, chunk, None].square()
    return out_bqk


def _used_keys(alpha_bhqk: Tensor) -> int:
    """One past the last key any head and query weights (the past of a causal model's chunk): later keys score 0."""
    weighted = alpha_bhqk.abs().amax(dim=(0, 1, 2)).nonzero()
    return int(weighted.max()) + 1 if weighted.numel() else 1
