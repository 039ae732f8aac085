"""ALTI: Aggregation of Layer-wise Token-to-token Interactions (Ferrando et al., 2022)."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from ..record import LayerRecord
from ._chunks import DEFAULT_MEMORY_BUDGET, query_chunks
from ._decompose import apply_linear_parts, head_vectors, row_scale
from ._norms import bias_or_zero


def alti(record: LayerRecord, *, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> Float[Tensor, "batch query key"]:
    """``c_ij = max(0, ‖y_i‖₁ − ‖y_i − T_i(x_j)‖₁)``: how much token j's transformed vector shapes token i's output.

    Ferrando, Gállego & Costa-jussà, "Measuring the Mixing of Contextual Information in the Transformer",
    EMNLP 2022 (https://aclanthology.org/2022.emnlp-main.595); reference code: mt-upc/transformer-contributions.

    Transformed vectors: post-LN blocks decompose through the first norm,
    ``T_i(x_j) = γ₁ ⊙ P(z_ij + δ_ij x_i) / σ(y_i)`` (β₁ and the ``b_O`` share go to the resultant); pre-LN blocks use
    ``T_i(x_j) = z_ij + δ_ij x_i`` and the resultant is the residual stream after attention. The resultant
    ``y_i = Σ_j T_i(x_j) + bias terms`` equals the real output (verified at extraction). The reference code takes
    σ without ε inside the variance; we use the norm's true ``sqrt(var + ε)`` so the resultant is exact (the two
    agree to 1e-7 for BERT's ε = 1e-12).

    The L1 distances need the vectors themselves: they are built in chunks of query positions so that
    ``[batch, chunk, key, d_model]`` intermediates stay within ``memory_budget``.

    Args:
        record: One layer's record.
        memory_budget: Bytes allowed for per-chunk intermediates.

    Returns:
        Non-negative, unnormalized contributions ``[batch, query, key]`` in float32 (rows are divided by their sum
        by :func:`inseq_mixing.context_mixing`).
    """
    attention = record.attention
    norms = () if record.pre_norm else (record.norm1,)
    alpha_bhqk = attention.alpha
    batch, _, n_queries, n_keys = alpha_bhqk.shape
    f_bhkd = apply_linear_parts(norms, head_vectors(attention))
    x_bqd = apply_linear_parts(norms, record.residual.float())
    d_model = x_bqd.shape[-1]
    scale_bq = row_scale(norms, x_bqd)
    b_o = attention.b_o.float() if attention.b_o is not None else torch.zeros_like(x_bqd[0, 0])
    bias_bqd = apply_linear_parts(norms, b_o).expand_as(x_bqd) * scale_bq[..., None]
    if norms:
        bias_bqd = bias_bqd + bias_or_zero(norms[-1], x_bqd)
    out_bqk = torch.empty(batch, n_queries, n_keys, dtype=torch.float32, device=alpha_bhqk.device)
    for chunk in query_chunks(n_queries, 3 * 4 * batch * n_keys * d_model, memory_budget):
        rows = torch.arange(chunk.start, chunk.stop, device=alpha_bhqk.device)
        t_bqkd = torch.einsum("bhqk,bhkd->bqkd", alpha_bhqk[:, :, chunk].float(), f_bhkd)
        t_bqkd[:, rows - chunk.start, rows] += x_bqd[:, chunk]
        t_bqkd *= scale_bq[:, chunk, None, None]
        resultant_bqd = t_bqkd.sum(dim=2) + bias_bqd[:, chunk]
        distance_bqk = (resultant_bqd[:, :, None] - t_bqkd).abs().sum(-1)
        out_bqk[:, chunk] = (resultant_bqd.abs().sum(-1)[..., None] - distance_bqk).clamp_min(0)
    return out_bqk
