"""Attention + residual through the following normalization layer (Kobayashi et al., 2021, "+RES1+LN1")."""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from ..record import LayerRecord
from ._chunks import DEFAULT_MEMORY_BUDGET
from ._decompose import attention_parts, transformed_l2_norms


def attention_norm_res_ln(
    record: LayerRecord, *, memory_budget: int = DEFAULT_MEMORY_BUDGET
) -> Float[Tensor, "batch query key"]:
    """``‖t_ij‖₂`` with ``t_ij = γ ⊙ P(z_ij + δ_ij x_i) / σ(y_i)``: the residual-added vectors through the norm.

    Kobayashi, Kuribayashi, Yokoi & Inui, EMNLP 2021 (https://aclanthology.org/2021.emnlp-main.373), "+RES1+LN1".
    ``σ(y_i)`` is the standard deviation (RMS for RMSNorm) of the TRUE pre-norm vector ``y_i = x_i + Σ_j z_ij + b_O``,
    so ``Σ_j t_ij + γ ⊙ P b_O / σ(y_i) + β`` equals the norm's real output; β and the ``b_O`` share are left out of
    every ``t_ij``, as in the context-mixing toolkit.

    Pre-LN models (GPT-2, Llama) have their first norm before the attention, inside the value path; the norm that
    follows the residual addition is the block's second norm (the FFN's input norm), so that is the one used here.
    Parallel blocks (GPT-J, GPT-NeoX, Falcon, Phi) and blocks whose FFN reads the stream unnormalized (OLMo 2)
    have no norm after the attention's residual addition: there this measure equals ``attention_norm_res``.

    Args:
        record: One layer's record.
        memory_budget: Bytes allowed for per-chunk intermediates.

    Returns:
        Unnormalized norms ``[batch, query, key]`` in float32.
    """
    return transformed_l2_norms(
        attention_parts(record),
        residual=record.residual,
        norms=record.norms(record.form.norms_to("ffn_input")),
        memory_budget=memory_budget,
        residual_column=record.form.residual_in_column,
    )
