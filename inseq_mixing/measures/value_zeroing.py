"""Value Zeroing (Mohebbi et al., 2023), computed with an exact shortcut instead of one forward per token."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from jaxtyping import Float
from torch import Tensor

from ..record import LayerRecord
from ._chunks import DEFAULT_MEMORY_BUDGET
from ._decompose import head_vectors

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


NOISE_FLOOR = {torch.float64: 1e-16, torch.float32: 1e-6, torch.float16: 1e-4, torch.bfloat16: 1e-2}
"""Raw row sums (``Σ_j C_ij``) below which a row's normalized scores are dominated by the rounding of the block's
own computation in that dtype. Measured against float64 brute-force reruns (GPT-2, MiniLM with value weights scaled
down to reach small sums; docs/measures/value_zeroing.md): above these floors normalized rows stay within about
3e-5 (float32), 1e-2 (float16) and 4e-2 (bfloat16) of the exact ones, below them the error grows to 4e-4 (float32)
and 0.6 (half precision)."""

NoisyRows = Literal["keep", "nan", "zero"]


def cosine_distance(a: Tensor, b: Tensor) -> Tensor:
    """``1 − cos(a, b)`` computed as ``½‖a/‖a‖ − b/‖b‖‖²`` along the last dimension.

    The two agree exactly in real arithmetic, but for nearly equal vectors ``1 − cos`` cancels: in float32 it keeps
    no digit below ~6e-8, while the difference of unit vectors keeps its relative precision. A zero vector has
    distance 1 to anything (cosine 0), as in ``torch.nn.functional.cosine_similarity``.
    """
    a_norm, b_norm = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    half_sq = 0.5 * (a / a_norm.clamp_min(1e-30) - b / b_norm.clamp_min(1e-30)).pow(2).sum(-1)
    degenerate = (a_norm == 0).squeeze(-1) | (b_norm == 0).squeeze(-1)
    return torch.where(degenerate, torch.ones_like(half_sq), half_sq)


def value_zeroing(
    record: LayerRecord,
    *,
    similarity: str = "cosine",
    heads: Any = None,
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
    ``memory_budget``. The attention itself is never rerun. ``1 − cos`` is formed as ``½‖â − b̂‖²`` of the unit
    vectors (:func:`cosine_distance`), which keeps its digits when the two outputs nearly agree; everything is
    computed in float64 for float64 models and in float32 otherwise.

    Args:
        record: One layer's record (with ``rest_of_block``).
        similarity: ``"cosine"`` (``1 − cos``, the paper) or ``"euclidean"`` (``‖x̃_i^{¬j} − x̃_i‖₂``).
        heads: Query heads whose values are zeroed: ``None`` (all), an int, a ``(start, end)`` range, a list, or a
            ``{layer: heads}`` mapping (layers not named get zero scores); encoder-decoders also take
            ``{"encoder": ..., "decoder": ..., "cross": ...}``, one such selection per attention.
        final_norm_on_last_layer: On the model's last layer, compare outputs after the model's final norm (what
            inseq 0.7.1 does, since it reads the model's last hidden state); elsewhere no effect.
        memory_budget: Bytes allowed for one chunk's intermediates.

    Returns:
        Raw distances ``[batch, query, key]`` (float64 for float64 models, else float32; cross-attention: plus a
        zero residual column, since the residual has no value vector to zero). :func:`finish_value_zeroing` then
        flags rows under the noise floor and applies ``zero_below``; rows are divided by their sum, diagonal
        included, by :func:`inseq_mixing.context_mixing`.
    """
    if similarity not in ("cosine", "euclidean"):
        raise ValueError(f"Unknown similarity {similarity!r}; use 'cosine' or 'euclidean'.")
    if record.rest_of_block is None:
        raise ValueError(
            f"value_zeroing cannot rerun what follows this attention ({record.stack} layer {record.layer_idx}): the "
            "record has no rest_of_block (a decoder's self-attention is followed by a cross-attention)."
        )
    attention = record.attention
    dtype = torch.float64 if record.compute_dtype == torch.float64 else torch.float32
    batch, n_heads, n_queries, n_keys = attention.alpha.shape
    scores_bqk = torch.zeros(batch, n_queries, n_keys, dtype=dtype, device=attention.alpha.device)
    zeroed = selected_heads(heads, record.layer_idx, n_heads, record.stack)
    if not zeroed:
        return scores_bqk
    through_final_norm = final_norm_on_last_layer and record.is_last
    alpha_bhqk = attention.alpha[:, zeroed].to(dtype)
    f_bhkd = head_vectors(attention, dtype)[:, zeroed]
    attended_bqd = attention.output.to(dtype)
    all_b, all_q = (idx.reshape(-1) for idx in torch.meshgrid(
        torch.arange(batch, device=scores_bqk.device), torch.arange(n_queries, device=scores_bqk.device), indexing="ij"
    ))  # fmt: skip
    rest = record.rest_of_block
    clean_pd = rest(attended_bqd[all_b, all_q], all_b, all_q, final_norm=through_final_norm).to(dtype)
    clean_bqd = clean_pd.reshape(batch, n_queries, -1)
    mixes_bkq = (alpha_bhqk != 0).any(dim=1).transpose(1, 2)  # pairs whose output can change
    d_model = f_bhkd.shape[-1]
    # z for a chunk of keys, the corrupted attention outputs and the FFN's hidden activations (taken as ≤ 8·d).
    keys_per_chunk = max(1, memory_budget // (dtype.itemsize * batch * n_queries * d_model * 10))
    for start in range(0, n_keys, keys_per_chunk):
        keys = slice(start, min(start + keys_per_chunk, n_keys))
        b_idx, k_idx, q_idx = mixes_bkq[:, keys].nonzero(as_tuple=True)
        if b_idx.numel() == 0:
            continue
        z_bkqd = torch.einsum("bhqk,bhkd->bkqd", alpha_bhqk[..., keys], f_bhkd[:, :, keys])
        z_pd = z_bkqd[b_idx, k_idx, q_idx]  # z_ij = Σ_h α^h_ij f^h_j of the selected pairs
        corrupted_attention_pd = attended_bqd[b_idx, q_idx] - z_pd
        if len(zeroed) == n_heads:
            # A query that attends only to j in every head keeps nothing but b_O; the difference would leave a rounding
            # residue that a post-attention norm (Gemma 2/3, OLMo 2) scales up by as much as 1/sqrt(eps).
            alone_p = (alpha_bhqk[b_idx, :, q_idx, k_idx + start] == 1).all(dim=-1)
            bias_d = attention.b_o.to(dtype) if attention.b_o is not None else torch.zeros_like(z_pd[0])
            corrupted_attention_pd[alone_p] = bias_d
        corrupted_pd = rest(corrupted_attention_pd, b_idx, q_idx, final_norm=through_final_norm).to(dtype)
        clean_pairs_pd = clean_bqd[b_idx, q_idx]
        if similarity == "cosine":
            distance_p = cosine_distance(corrupted_pd, clean_pairs_pd)
        else:
            distance_p = (corrupted_pd - clean_pairs_pd).norm(dim=-1)
        scores_bqk[b_idx, q_idx, k_idx + start] = distance_p
    return scores_bqk


def finish_value_zeroing(
    raw: Float[Tensor, "batch layer query key"],
    query_mask: Tensor,
    dtype: torch.dtype,
    *,
    zero_below: float = 0.0,
    noisy_rows: NoisyRows = "keep",
) -> Float[Tensor, "batch layer query key"]:
    """Flag the rows whose raw sum lies under the noise floor of ``dtype``, then apply ``zero_below``.

    A row whose every zeroing barely moves the output (raw sum below :data:`NOISE_FLOOR`, e.g. 1e-4 in float32)
    holds scores of the size of the block's own rounding: once normalized they can differ from an exact computation
    by much more than the measure's precision elsewhere (and be slightly negative in the ``1 − cos`` definition's
    float32 rounding).

    Args:
        raw: A stack's raw scores, padding rows and columns zeroed.
        query_mask: ``[batch, query]``, 1 for real tokens.
        dtype: The lowest precision the blocks computed in.
        zero_below: Set raw scores below this value to 0 (inseq 0.7.1 uses 1e-5; the paper and toolkit use none).
        noisy_rows: ``"keep"`` the noisy rows as computed (a warning says how many there are), or return them as
            ``"nan"`` or ``"zero"``.

    Returns:
        The raw scores with the policy applied.
    """
    if noisy_rows not in ("keep", "nan", "zero"):
        raise ValueError(f"noisy_rows must be 'keep', 'nan' or 'zero'; got {noisy_rows!r}.")
    floor = NOISE_FLOOR.get(dtype, NOISE_FLOOR[torch.float32])
    row_sum = raw.sum(-1)
    real_bq = query_mask.bool().reshape(query_mask.shape[0], *([1] * (raw.dim() - 3)), query_mask.shape[-1])
    noisy = real_bq & (row_sum > 0) & (row_sum < floor)  # all-zero rows: layers with no zeroed head
    count = int(noisy.sum())
    if count and noisy_rows == "keep":
        warnings.warn(
            f"value_zeroing: {count} of {int((real_bq & (row_sum > 0)).sum())} rows (layer × token) have raw sums "
            f"below the {str(dtype).removeprefix('torch.')} noise floor ({floor:g}): their normalized scores are "
            "dominated by rounding. Pass noisy_rows='nan' or 'zero' to drop them, or run the model in float64 "
            "(see docs/measures/value_zeroing.md).",
            stacklevel=2,
        )
    elif count:
        raw = raw.masked_fill(noisy[..., None], float("nan") if noisy_rows == "nan" else 0.0)
    if zero_below > 0:
        raw = torch.where(raw < zero_below, torch.zeros_like(raw), raw)
    return raw
