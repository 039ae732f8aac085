"""Norm of the attention vectors plus the residual connection (Kobayashi et al., 2021, "+RES1")."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from ..record import LayerRecord
from ._chunks import DEFAULT_MEMORY_BUDGET
from ._decompose import attention_parts, transformed_l2_norms


def attention_norm_res(
    record: LayerRecord, *, memory_budget: int = DEFAULT_MEMORY_BUDGET
) -> Float[Tensor, "batch query key"]:
    """``‖z_ij + δ_ij x_i‖₂``: attention vectors with the residual ``x_i`` added to the token's own vector.

    Kobayashi, Kuribayashi, Yokoi & Inui, "Incorporating Residual and Normalization Layers into Analysis of Masked
    Language Models", EMNLP 2021 (https://aclanthology.org/2021.emnlp-main.373), the "+RES1" setting. For pre-LN
    models the residual carries the raw block input ``x`` while the values read ``norm1(x)``.

    Args:
        record: One layer's record.
        memory_budget: Bytes allowed for per-chunk intermediates.

    Returns:
        Unnormalized norms ``[batch, query, key]`` in float32.
    """
    return transformed_l2_norms(
        attention_parts(record),
        residual=record.residual,
        norms=(),
        memory_budget=memory_budget,
        residual_column=record.form.residual_in_column,
    )
