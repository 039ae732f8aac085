"""The ``recording`` context: every block of a model recorded, assembled, verified and handed to a callback.

Each job has its module: :mod:`._recorder` (hooks), :mod:`._assemble` (slots → record), :mod:`._verify` (the
identities), :mod:`._rerun` (what follows the attention). Each block's record is built when the block finishes,
verified against the real outputs, handed to ``on_layer`` and dropped, so at most one layer is held at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from ..errors import ExtractionError
from ..record import HeadRecord, LayerRecord, NormRecord
from ._adapter import Adapter, EncoderDecoderAdapter
from ._assemble import assemble
from ._modules import eager_attention, eval_mode, first_tensor, resolve
from ._recorder import BlockRecorder, Session
from ._rerun import rest_of_block
from ._verify import tolerance_for, verify_layer

OnLayer = Callable[[LayerRecord], None]
OnHead = Callable[[HeadRecord], None]


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
        blocks = resolve(model.base_model, view.blocks, field="blocks", where=model_class)
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
                model.base_model, view.final_norm, field="final_norm", where=model_class
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

    head = _HeadRecorder(model, adapter, on_head) if on_head is not None else None
    # Every path is resolved above; from here on each hook's removal is registered the moment the hook exists.
    with ExitStack() as hooks, eager_attention(model), eval_mode(model), torch.no_grad():
        for recorder in recorders:
            recorder.emit = emit
            recorder.attach(hooks)
        if head is not None:
            head.attach(hooks, session)
        yield


class _HeadRecorder:
    """Records what follows the last block: the final norm (with its true input) and the output layer's weights."""

    def __init__(self, model: PreTrainedModel, adapter: Adapter | EncoderDecoderAdapter, on_head: OnHead) -> None:
        if isinstance(adapter, EncoderDecoderAdapter):
            raise ExtractionError(
                f"{type(model).__name__}: recording the model's head is supported for single-stack models only."
            )
        self.model, self.adapter, self.on_head = model, adapter, on_head
        self.final_norm = None
        if adapter.final_norm is not None:
            self.final_norm = resolve(
                model.base_model, adapter.final_norm, field="final_norm", where=type(model).__name__
            )
        self.slots: dict[str, Tensor] = {}

    def attach(self, hooks: ExitStack, session: Session) -> None:
        def store(name: str) -> Callable[..., None]:
            def hook(_module: nn.Module, inputs: Any, output: Any = None) -> None:
                if not session.paused:
                    self.slots[name] = first_tensor(inputs if output is None else output).clone()

            return hook

        if self.final_norm is not None:
            hooks.callback(self.final_norm.register_forward_pre_hook(store("norm_input")).remove)
            hooks.callback(self.final_norm.register_forward_hook(store("norm_output")).remove)
        hooks.callback(self.model.base_model.register_forward_hook(self._on_model_output).remove)

    def _on_model_output(self, _module: nn.Module, _inputs: Any, output: Any) -> None:
        hidden = output[0] if isinstance(output, (tuple, list)) else getattr(output, "last_hidden_state", None)
        norm = None
        if self.final_norm is not None:
            norm = NormRecord(
                kind=self.adapter.norm_kind,
                weight=_weight(self.final_norm, self.adapter.norm_weight_offset),
                bias=None if getattr(self.final_norm, "bias", None) is None else self.final_norm.bias.detach(),
                eps=float(getattr(self.final_norm, self.adapter.norm_eps_attr)),
                input=self.slots["norm_input"],
                output=self.slots["norm_output"],
            )
        output_layer = self.model.get_output_embeddings() if self.model is not self.model.base_model else None
        weight = None if output_layer is None else output_layer.weight.detach()
        bias = None if output_layer is None or output_layer.bias is None else output_layer.bias.detach()
        self.slots.clear()
        self.on_head(HeadRecord(hidden=hidden, final_norm=norm, output_weight=weight, output_bias=bias))


def _weight(module: nn.Module, offset: float) -> Tensor | None:
    weight = getattr(module, "weight", None)
    if weight is None:
        return None
    return weight.detach() + offset if offset else weight.detach()
