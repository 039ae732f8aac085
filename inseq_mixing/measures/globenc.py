"""GlobEnc's per-layer vectors: attention, residual and both normalization layers (Modarressi et al., 2022)."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from ..record import LayerRecord
from ._chunks import DEFAULT_MEMORY_BUDGET
from ._decompose import attention_parts, transformed_l2_norms


def globenc(record: LayerRecord, *, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> Float[Tensor, "batch query key"]:
    """``‖g_ij‖₂`` with ``g_ij = γ₂ ⊙ P t_ij / σ(u_i)``: the +RES1+LN1 vectors passed through the second norm too.

    Modarressi, Fayyaz, Yaghoobzadeh & Pilehvar, "GlobEnc: Quantifying Global Token Attribution by Incorporating
    the Whole Encoder Layer in Transformers", NAACL 2022 (https://aclanthology.org/2022.naacl-main.19).
    ``u_i = h_i + FFN(h_i)`` is the true pre-LN2 vector; the FFN itself is not decomposed and both β are left out.
    GlobEnc aggregates these layer matrices by rollout (see :mod:`inseq_mixing.rollout`).

    Pre-LN blocks have no norm after their FFN, so their per-layer GlobEnc vectors are the +RES1+LN1 vectors through
    the second norm (:func:`~inseq_mixing.measures.attention_norm_res_ln`); this is our extension, the original is
    defined for post-LN encoders only.

    Args:
        record: One layer's record.
        memory_budget: Bytes allowed for per-chunk intermediates.

    Returns:
        Unnormalized norms ``[batch, query, key]`` in float32.
    """
    return transformed_l2_norms(
        attention_parts(record),
        residual=record.residual,
        norms=record.norms(record.form.norms_to("output_without_ffn")),
        memory_budget=memory_budget,
        residual_column=record.form.residual_in_column,
    )
