"""Rerunning what follows a block's attention, with the block's own modules (value zeroing's exact shortcut).

The block's form (:class:`~inseq_mixing.block.BlockForm`) says how its modules are wired; this module only supplies
them, batches single tokens and keeps the hooks quiet while they run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..block import BlockModules
from ..errors import DecompositionError
from ..record import RestOfBlock
from ._assemble import output_projection, per_head
from ._cross import cross_attention_fn
from ._modules import first_tensor
from ._recorder import BlockRecorder
from ._verify import relative_error, tolerance_for

Follow = Callable[[Tensor, Tensor, bool], Tensor]
"""``(stream [n, d_model], batch_idx [n], final_norm) -> block output [n, d_model]``."""


def block_modules(recorder: BlockRecorder) -> BlockModules:
    """The block's modules as callables for the form's recomputations."""

    def ffn(h: Tensor) -> Tensor:
        for module in recorder.ffn:
            h = first_tensor(module(h))
        return h

    return BlockModules(
        norm1=recorder.norm1,
        norm2=recorder.norm2,
        ffn=ffn,
        post_attention_norm=recorder.norms.get("post_attention_norm"),
        post_ffn_norm=recorder.norms.get("post_ffn_norm"),
    )


def rest_of_block(
    recorder: BlockRecorder, slots: dict[str, Tensor], head_mixes: dict, following_slots: dict[str, Tensor] | None
) -> RestOfBlock | None:
    """``rest(attention_output [n, d], batch_idx [n], query_idx [n], *, final_norm) -> block output [n, d]``.

    A decoder's self-attention view continues through the same block's cross-attention (recomputed for the changed
    stream); a view whose "FFN" is not per token and that has no such continuation gets ``None``.
    """
    form, modules, final = recorder.adapter.form, block_modules(recorder), recorder.final_norm
    session = recorder.session
    residual, ffn_output = slots["residual"], slots["ffn_output"]
    if recorder.following is not None:
        follow = follow_from_stream(recorder.following, following_slots or {}, head_mixes)

        def rest_through_cross(attention_output: Tensor, batch_idx: Tensor, query_idx: Tensor, *,
                               final_norm: bool = False) -> Tensor:  # fmt: skip
            with session.pause():
                x = residual[batch_idx, query_idx].unsqueeze(0)
                stream = form.stream_after_attention(modules, x, attention_output.unsqueeze(0)).squeeze(0)
                return follow(stream, batch_idx, final_norm)

        return rest_through_cross
    if not recorder.adapter.ffn_is_per_token:
        return None

    def rest(attention_output: Tensor, batch_idx: Tensor, query_idx: Tensor, *, final_norm: bool = False) -> Tensor:
        with session.pause():
            x = residual[batch_idx, query_idx].unsqueeze(0)
            ffn = ffn_output[batch_idx, query_idx].unsqueeze(0)
            out = form.rest_of_block(modules, x, attention_output.unsqueeze(0), ffn)
            return (final(out) if final_norm and final is not None else out).squeeze(0)

    return rest


def follow_from_stream(cross: BlockRecorder, slots: dict[str, Tensor], head_mixes: dict) -> Follow:
    """A cross-attention view's block from its input stream on, recomputing the cross-attention for changed
    queries from the recorded keys and values; the recomputation is checked against the recorded output first.

    Raises:
        DecompositionError: If the recomputed cross-attention does not reproduce the recorded one.
    """
    alpha = slots["alpha"]
    n_heads = alpha.shape[1]
    w_o, b_o = output_projection(cross, n_heads, head_mixes.get(cross.output_proj))
    d_head = w_o.shape[1]
    adapter = cross.adapter
    scaling = float(getattr(cross.attention, adapter.scaling_attr)) if adapter.scaling_attr else 1.0
    attend = cross_attention_fn(
        query=cross.query,
        keys_bhse=per_head(cross, slots["keys"], n_heads, d_head),
        values_bhse=per_head(cross, slots["values"], n_heads, d_head),
        source_mask_bs=alpha.abs().amax(dim=(1, 2)) > 0,
        w_o_hed=w_o,
        b_o_d=b_o,
        scaling=scaling,
    )
    form, modules, final, session = adapter.form, block_modules(cross), cross.final_norm, cross.session
    reads = slots["norm1_output"] if form.attention_reads_norm1 else slots["residual"]
    batch, n_queries, d_model = reads.shape
    every_b = torch.arange(batch, device=reads.device).repeat_interleave(n_queries)
    with session.pause():
        rebuilt = attend(reads.reshape(-1, d_model), every_b).reshape(batch, n_queries, -1)
    error, tolerance = relative_error(rebuilt, slots["attention_output"]), tolerance_for(reads.dtype)
    if not error <= tolerance:
        raise DecompositionError(cross.model_class, cross.layer_idx, "cross-attention recomputation", error, tolerance)

    def follow(stream: Tensor, batch_idx: Tensor, final_norm: bool) -> Tensor:
        with session.pause():
            output = attend(form.attention_input(modules, stream.unsqueeze(0)).squeeze(0), batch_idx)
            out = form.rest_of_block(modules, stream.unsqueeze(0), output.unsqueeze(0))
            return (final(out) if final_norm and final is not None else out).squeeze(0)

    return follow
