"""Value Zeroing (Mohebbi et al., 2023), computed with an exact shortcut instead of one forward per token."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from ..record import LayerRecord
from ._chunks import DEFAULT_MEMORY_BUDGET
from ._decompose import head_vectors, with_empty_residual_column

HeadSelection = int | tuple[int, int] | Sequence[int] | None
"""Heads to zero: ``None`` (all), one head, a ``(start, end)`` range, or a list of heads."""


def selected_heads(heads: Any, layer_idx: int, n_heads: int, stack: str = "layers") -> list[int]:
    """The query heads whose values are zeroed in layer ``layer_idx`` of ``stack``.

    A mapping with int keys gives heads per layer, and layers it does not name are not zeroed (their scores are 0),
    as in inseq. A mapping with str keys gives a selection per stack (``"encoder"``, ``"decoder"``, ``"cross"``);
    stacks it does not name have every head zeroed.
    """
    if isinstance(heads, Mapping) and any(isinstance(key, str) for key in heads):
        heads = heads.get(stack)
    if isinstance(heads, Mapping):
        if layer_idx not in heads:
            return []
        heads = heads[layer_idx]
    if heads is None:
        return list(range(n_heads))
    if isinstance(heads, int):
        selection = [heads]
    elif isinstance(heads, tuple) and len(heads) == 2 and all(isinstance(h, int) for h in heads):
        selection = list(range(heads[0], heads[1]))
    else:
        selection = list(heads)
    invalid = [h for h in selection if not 0 <= h < n_heads]
    if invalid:
        raise ValueError(f"Head indices {invalid} out of range for layer {layer_idx} with {n_heads} heads.")
    return selection


def value_zeroing(
    record: LayerRecord,
    *,
    similarity: str = "cosine",
    heads: Any = None,
    zero_below: float = 0.0,
    final_norm_on_last_layer: bool = False,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> Float[Tensor, "batch query key"]:
    """``C_ij = 1 − cos(x̃_i^{¬j}, x̃_i)``: how much token i's layer output changes when token j's values are zeroed.

    Mohebbi, Zuidema, Chrupała & Alishahi, "Quantifying Context Mixing in Transformers", EACL 2023
    (https://aclanthology.org/2023.eacl-main.245); reference code: hmohebbi/context_mixing_toolkit. The layer runs on
    its ORIGINAL input with token j's value vectors (value bias included) zeroed in the selected heads; queries, keys
    and attention weights are unchanged, and each layer is perturbed in isolation.

    Exact shortcut: attention weights do not depend on the values, so zeroing ``v_j`` changes query i's attention
    output by exactly ``−z_ij = −Σ_h α^h_ij v^h_j W_O^h``. Only the rest of the block (residual, norms, FFN) is
    recomputed, for the (i, j) pairs with ``α_ij ≠ 0`` (``j ≤ i`` in a causal model), in key chunks bounded by
    ``memory_budget``. The attention itself is never rerun.

    Args:
        record: One layer's record (with ``rest_of_block``).
        similarity: ``"cosine"`` (``1 − cos``, the paper) or ``"euclidean"`` (``‖x̃_i^{¬j} − x̃_i‖₂``).
        heads: Query heads whose values are zeroed: ``None`` (all), an int, a ``(start, end)`` range, a list, or a
            ``{layer: heads}`` mapping (layers not named get zero scores); encoder-decoders also take
            ``{"encoder": ..., "decoder": ..., "cross": ...}``, one such selection per attention.
        zero_below: Set raw scores below this value to 0 (inseq 0.7.1 uses 1e-5; the paper and toolkit use none).
        final_norm_on_last_layer: On the model's last layer, compare outputs after the model's final norm (what
            inseq 0.7.1 does, since it reads the model's last hidden state); elsewhere no effect.
        memory_budget: Bytes allowed for one chunk's intermediates.

    Returns:
        Raw distances ``[batch, query, key]`` in float32 (cross-attention: plus a zero residual column, since the
        residual has no value vector to zero) (rows are divided by their sum, diagonal included, by
        :func:`inseq_mixing.context_mixing`). ``1 − cos`` can be a float32 rounding away from 0 (about ±1e-7).
    """
    if similarity not in ("cosine", "euclidean"):
        raise ValueError(f"Unknown similarity {similarity!r}; use 'cosine' or 'euclidean'.")
    if record.rest_of_block is None:
        raise ValueError(
            f"value_zeroing cannot rerun what follows this attention ({record.stack} layer {record.layer_idx}): the "
            "record has no rest_of_block (a decoder's self-attention is followed by a cross-attention)."
        )
    attention = record.attention
    batch, n_heads, n_queries, n_keys = attention.alpha.shape
    scores_bqk = torch.zeros(batch, n_queries, n_keys, dtype=torch.float32, device=attention.alpha.device)
    zeroed = selected_heads(heads, record.layer_idx, n_heads, record.stack)
    if not zeroed:
        return with_empty_residual_column(scores_bqk) if record.is_cross_attention else scores_bqk
    through_final_norm = final_norm_on_last_layer and record.is_last
    alpha_bhqk = attention.alpha[:, zeroed].float()
    f_bhkd = head_vectors(attention)[:, zeroed]
    attended_bqd = attention.output.float()
    all_b, all_q = (idx.reshape(-1) for idx in torch.meshgrid(
        torch.arange(batch, device=scores_bqk.device), torch.arange(n_queries, device=scores_bqk.device), indexing="ij"
    ))  # fmt: skip
    clean_pd = record.rest_of_block(attended_bqd[all_b, all_q], all_b, all_q, final_norm=through_final_norm).float()
    clean_bqd = clean_pd.reshape(batch, n_queries, -1)
    mixes_bkq = (alpha_bhqk != 0).any(dim=1).transpose(1, 2)  # pairs whose output can change
    d_model = f_bhkd.shape[-1]
    # z for a chunk of keys, the corrupted attention outputs and the FFN's hidden activations (taken as ≤ 8·d).
    keys_per_chunk = max(1, memory_budget // (4 * batch * n_queries * d_model * 10))
    for start in range(0, n_keys, keys_per_chunk):
        keys = slice(start, min(start + keys_per_chunk, n_keys))
        b_idx, k_idx, q_idx = mixes_bkq[:, keys].nonzero(as_tuple=True)
        if b_idx.numel() == 0:
            continue
        z_bkqd = torch.einsum("bhqk,bhkd->bkqd", alpha_bhqk[..., keys], f_bhkd[:, :, keys])
        z_pd = z_bkqd[b_idx, k_idx, q_idx]  # z_ij = Σ_h α^h_ij f^h_j of the selected pairs
        corrupted_attention_pd = attended_bqd[b_idx, q_idx] - z_pd
        if len(zeroed) == n_heads:
            # A query that attends only to j in every head keeps nothing but b_O; the difference would leave a float32
            # residue that a post-attention norm (Gemma 2/3, OLMo 2) scales up by as much as 1/sqrt(eps).
            alone_p = (alpha_bhqk[b_idx, :, q_idx, k_idx + start] == 1).all(dim=-1)
            bias_d = attention.b_o.float() if attention.b_o is not None else torch.zeros_like(z_pd[0])
            corrupted_attention_pd[alone_p] = bias_d
        corrupted_pd = record.rest_of_block(corrupted_attention_pd, b_idx, q_idx, final_norm=through_final_norm).float()
        clean_pairs_pd = clean_bqd[b_idx, q_idx]
        if similarity == "cosine":
            distance_p = 1 - torch.nn.functional.cosine_similarity(corrupted_pd, clean_pairs_pd, dim=-1)
        else:
            distance_p = (corrupted_pd - clean_pairs_pd).norm(dim=-1)
        scores_bqk[b_idx, q_idx, k_idx + start] = distance_p
    if zero_below > 0:
        scores_bqk = torch.where(scores_bqk < zero_below, torch.zeros_like(scores_bqk), scores_bqk)
    return with_empty_residual_column(scores_bqk) if record.is_cross_attention else scores_bqk
