"""Recomputing a cross-attention for changed queries, from the keys and values recorded on the source.

Value zeroing of a decoder's self-attention changes the stream that the following cross-attention reads, so the
cross-attention must be recomputed for those queries. Keys, values, the source padding and the output projection
are those of the real forward pass; the recomputation is checked against the recorded output before use.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def cross_attention_fn(
    query: Callable[[Tensor], Tensor],
    keys_bhse: Tensor,
    values_bhse: Tensor,
    source_mask_bs: Tensor,
    w_o_hed: Tensor,
    b_o_d: Tensor | None,
    scaling: float,
) -> Callable[[Tensor, Tensor], Tensor]:
    """A function ``(queries_in [n, d_model], batch_idx [n]) -> attention output [n, d_model]``.

    ``queries_in`` is what the cross-attention reads (after its norm in pre-LN blocks); ``source_mask_bs`` marks
    the source tokens the recorded attention could attend to.
    """

    def attend(queries_in: Tensor, batch_idx: Tensor) -> Tensor:
        n_heads, _, d_head = keys_bhse.shape[1], keys_bhse.shape[2], keys_bhse.shape[3]
        q_phe = query(queries_in.unsqueeze(0)).squeeze(0).float().reshape(len(batch_idx), n_heads, d_head)
        out = torch.empty(len(batch_idx), w_o_hed.shape[-1], dtype=torch.float32, device=q_phe.device)
        for b in batch_idx.unique().tolist():
            rows = (batch_idx == b).nonzero().reshape(-1)
            scores_phs = torch.einsum("phe,hse->phs", q_phe[rows], keys_bhse[b].float()) * scaling
            scores_phs = scores_phs.masked_fill(~source_mask_bs[b].bool(), float("-inf"))
            context_phe = torch.einsum("phs,hse->phe", scores_phs.softmax(-1), values_bhse[b].float())
            out[rows] = torch.einsum("phe,hed->pd", context_phe, w_o_hed.float())
        return out if b_o_d is None else out + b_o_d.float()

    return attend
