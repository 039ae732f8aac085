"""Raw attention weights, averaged over heads."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from ..record import LayerRecord
from ._chunks import DEFAULT_MEMORY_BUDGET


def attention(
    record: LayerRecord, *, per_head: bool = False, memory_budget: int = DEFAULT_MEMORY_BUDGET
) -> Float[Tensor, "batch query key"] | Float[Tensor, "batch head query key"]:
    """Attention weights ``A_ij = mean_h α^h_ij`` (row = query, column = key).

    Raw attention as analysed by Abnar & Zuidema (ACL 2020, https://aclanthology.org/2020.acl-main.385) and as the
    context-mixing toolkit reports it (Mohebbi et al., EACL 2023).

    Args:
        record: One layer's record.
        per_head: Return ``[batch, head, query, key]`` instead of the head mean.
        memory_budget: Unused (kept for a uniform signature).

    Returns:
        ``[batch, query, key]`` in float32; rows of non-padding queries sum to 1. (Cross-attention: the registered
        measure appends an empty residual column, which attention weights do not score.)
    """
    alpha = record.attention.alpha.float()
    mixing = alpha if per_head else alpha.mean(dim=1)
    return mixing
