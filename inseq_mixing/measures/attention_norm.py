"""Norm of the weighted value vectors (Kobayashi et al., 2020)."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from ..record import LayerRecord
from ._chunks import DEFAULT_MEMORY_BUDGET
from ._decompose import attention_parts, transformed_l2_norms


def attention_norm(
    record: LayerRecord, *, per_head: bool = False, memory_budget: int = DEFAULT_MEMORY_BUDGET
) -> Float[Tensor, "batch query key"] | Float[Tensor, "batch head query key"]:
    """``N_ij = ‖z_ij‖₂`` with ``z_ij = Σ_h α^h_ij (v^h_j W_O^h)``: what token j sends to token i through attention.

    Kobayashi, Kuribayashi, Yokoi & Inui, "Attention is Not Only a Weight: Analyzing Transformers with Vector
    Norms", EMNLP 2020 (https://aclanthology.org/2020.emnlp-main.574). Heads are summed as vectors before the norm;
    the value bias is included and the output bias ``b_O`` excluded, as in the context-mixing toolkit.

    Identity: ``Σ_j z_ij + b_O`` equals the attention module's output.

    Args:
        record: One layer's record.
        per_head: Return ``‖α^h_ij f^h(x_j)‖₂`` per head, ``[batch, head, query, key]``.
        memory_budget: Bytes allowed for per-chunk intermediates.

    Returns:
        Unnormalized norms ``[batch, query, key]`` in float32 (cross-attention: plus a zero residual column).
    """
    parts = attention_parts(record)
    if per_head:
        f_norm_bhk = parts.head_vectors().norm(dim=-1)
        mixing = parts.alpha.float() * f_norm_bhk[:, :, None, :] * parts.query_scale[:, None, :, None]
    else:
        mixing = transformed_l2_norms(parts, residual=None, norms=(), memory_budget=memory_budget)
    return mixing
