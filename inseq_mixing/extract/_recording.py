"""The ``recording`` context: every block of a model recorded, assembled, verified and handed to a callback.

Each job has its module: :mod:`._recorder` (hooks), :mod:`._assemble` (slots → record), :mod:`._verify` (the
identities), :mod:`._rerun` (what follows the attention). Each block's record is built when the block finishes,
verified against the real outputs, handed to ``on_layer`` and dropped, so at most one layer is held at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from ..errors import ExtractionError
from ..record import LayerRecord
from ._adapter import Adapter, EncoderDecoderAdapter
from ._assemble import assemble
from ._head import HeadRecorder, OnHead
from ._modules import bare_model, eager_attention, eval_mode, resolve
from ._recorder import BlockRecorder, Session
from ._rerun import rest_of_block
from ._verify import tolerance_for, verify_layer

OnLayer = Callable[[LayerRecord], None]


def views(adapter: Adapter | EncoderDecoderAdapter) -> dict[str, Adapter]:
    """The adapter of every record stack: ``{"layers": ...}`` or the encoder, decoder and cross views."""
    if isinstance(adapter, EncoderDecoderAdapter):
        return {"encoder": adapter.encoder, "decoder": adapter.decoder, "cross": adapter.cross}
    return {"layers": adapter}


@contextmanager
def recording(
    model: PreTrainedModel,
    adapter: Adapter | EncoderDecoderAdapter,
    on_layer: OnLayer,
    *,
    record_ffn: bool = False,
    on_head: OnHead | None = None,
    head_mixes: Mapping[nn.Module, Tensor] | None = None,
) -> Iterator[None]:
    """Within this context, every forward of ``model`` calls ``on_layer`` with each block's verified record.

    Encoder-decoder adapters record three views (``record.stack``: ``"encoder"``, ``"decoder"``, ``"cross"``).
    Attention runs eagerly and the model in eval mode; hooks and settings are restored on exit, also on error.

    Args:
        model: The model (bare or with a head).
        adapter: Its adapter.
        on_layer: Called with every block's record, in the order the blocks run.
        record_ffn: Record the FFN's parts too (``LayerRecord.ffn``, verified like the attention).
        on_head: Single-stack models: called after the forward with the model's head (final norm, output layer).
        head_mixes: Output projection -> head-mixing matrix to fold into its ``W_O`` (``extract/heads.py``).
    """
    session, mixes, model_class = Session(), dict(head_mixes or {}), type(model).__name__
    recorders: list[BlockRecorder] = []
    by_stack: dict[str, list[BlockRecorder]] = {}
    for stack, view in views(adapter).items():
        blocks = resolve(bare_model(model), view.blocks, field="blocks", where=model_class)
        if not isinstance(blocks, (nn.ModuleList, nn.Sequential)) or len(blocks) == 0:
            raise ExtractionError(
                f"{model_class}: adapter field 'blocks' = '{view.blocks}' is a {type(blocks).__name__}"
                f"{' with no blocks' if isinstance(blocks, (nn.ModuleList, nn.Sequential)) else ''}; expected the "
                "ModuleList of Transformer blocks."
            )
        wants_ffn = record_ffn and view.ffn_is_per_token
        stack_recorders = [
            BlockRecorder(idx, block, view, model_class, session, stack, record_ffn=wants_ffn)
            for idx, block in enumerate(blocks)
        ]
        stack_recorders[-1].is_last = True
        if view.final_norm is not None:
            stack_recorders[-1].final_norm = resolve(
                bare_model(model), view.final_norm, field="final_norm", where=model_class
            )
        if stack == "cross":  # the decoder self-attention's rest of block runs through the cross-attention
            for decoder_recorder, cross_recorder in zip(by_stack["decoder"], stack_recorders, strict=True):
                decoder_recorder.following = cross_recorder
        by_stack[stack] = stack_recorders
        recorders.extend(stack_recorders)

    def emit(recorder: BlockRecorder, slots: dict[str, Tensor]) -> None:
        following = recorder.following.slots if recorder.following is not None else None
        rest = rest_of_block(recorder, slots, mixes, following)
        record = assemble(recorder, slots, mixes.get(recorder.output_proj), rest)
        verify_layer(record, model_class, tolerance_for(record.compute_dtype))
        with session.pause():
            on_layer(record)

    head = HeadRecorder(model, adapter, on_head) if on_head is not None else None
    # Every path is resolved above; from here on each hook's removal is registered the moment the hook exists.
    with ExitStack() as hooks, eager_attention(model), eval_mode(model), torch.no_grad():
        for recorder in recorders:
            recorder.emit = emit
            recorder.attach(hooks)
        if head is not None:
            head.attach(hooks, session)
        yield
