"""Generic machinery that turns an :class:`Adapter` into forward hooks producing one :class:`LayerRecord` per block.

Hooks read only module boundaries (inputs and outputs of projections, norms, the attention module and the block).
Each block's record is assembled when the block finishes, verified against the real outputs, handed to a callback
and dropped, so at most one layer's attention weights are held at a time.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from transformers import PreTrainedModel

from ..block import BlockModules
from ..errors import DecompositionError, ExtractionError, OffloadedWeightsError
from ..record import AttentionRecord, LayerRecord, NormRecord, RestOfBlock
from ._adapter import Adapter, EncoderDecoderAdapter
from ._cross import cross_attention_fn
from ._modules import eager_attention, eval_mode, first_tensor, output_projection_per_head, resolve
from ._verify import relative_error, tolerance_for, verify_layer
from .heads import head_mixing

OnLayer = Callable[[LayerRecord], None]


PER_TOKEN_OUTPUTS = frozenset(
    {"attention_output", "ffn_output", "norm1_input", "norm1_output", "norm2_input", "norm2_output",
     "post_attention_norm_input", "post_attention_norm_output", "post_ffn_norm_input", "post_ffn_norm_output",
     "residual", "output"}
)  # fmt: skip
"""Slots holding one ``[batch, seq, d_model]`` vector per token."""


class _Session:
    """State shared by every recorder of one ``recording`` context."""

    def __init__(self) -> None:
        self.paused = False

    @contextmanager
    def pause(self) -> Iterator[None]:
        """Ignore hooks while modules are rerun (value zeroing)."""
        previous, self.paused = self.paused, True
        try:
            yield
        finally:
            self.paused = previous


class _BlockRecorder:
    """Collects one block's tensors (for one view of it) from hooks and emits a verified :class:`LayerRecord`."""

    def __init__(
        self,
        layer_idx: int,
        block: nn.Module,
        adapter: Adapter,
        model_class: str,
        on_layer: OnLayer,
        session: _Session,
        stack: str,
    ):
        self.layer_idx = layer_idx
        self.block = block
        self.adapter = adapter
        self.model_class = model_class
        self.on_layer = on_layer
        self.session = session
        self.stack = stack
        self.where = where = f"{model_class}, {'' if stack == 'layers' else stack + ' '}block {layer_idx}"

        def part(field: str, path: str) -> nn.Module:
            return resolve(block, path, field=field, where=where)

        # Every path is resolved here, before any hook is registered anywhere (see ``recording``).
        self.attention = part("attention", adapter.attention)
        self.value = part("value", adapter.value)
        self.output_proj = part("output_proj", adapter.output_proj)
        self.norms = {
            name: part(name, path)
            for name, path in (
                ("norm1", adapter.norm1),
                ("norm2", adapter.norm2),
                ("post_attention_norm", adapter.post_attention_norm),
                ("post_ffn_norm", adapter.post_ffn_norm),
            )
            if path is not None
        }
        self.norm1, self.norm2 = self.norms.get("norm1"), self.norms.get("norm2")
        if not adapter.ffn:
            raise ExtractionError(f"{where}: adapter field 'ffn' is empty; name the modules that compute the FFN.")
        self.ffn = [part("ffn", path) for path in adapter.ffn]
        self.key = part("key", adapter.key) if adapter.key is not None else None
        self.query = part("query", adapter.query) if adapter.query is not None else None
        self.sources: dict[str, tuple[nn.Module, str]] = {}
        for name, source in (("residual", adapter.residual_source), ("output", adapter.output_source)):
            if source is None:
                continue
            field = f"{name}_source"
            if not (isinstance(source, tuple) and len(source) == 2 and source[1] in ("input", "output")):
                raise ExtractionError(
                    f"{where}: adapter field '{field}' = {source!r} is not a (module path, 'input' | 'output') pair."
                )
            self.sources[name] = (part(field, source[0]), source[1])
        self.final_norm: nn.Module | None = None  # the stack's final norm, set on its last block only
        self.following: _BlockRecorder | None = None  # decoder self-attention: the same block's cross-attention
        self.slots: dict[str, Tensor] = {}
        self.is_last = False
        self.weights_requested = False

    def attach(self, hooks: ExitStack) -> None:
        """Register the hooks; each handle's removal is pushed onto ``hooks`` as soon as it exists."""

        def keep(handle: RemovableHandle) -> None:
            hooks.callback(handle.remove)

        keep(self.block.register_forward_pre_hook(self._on_block_input, with_kwargs=True))
        keep(self.attention.register_forward_hook(self._on_attention))
        keep(self.value.register_forward_hook(self._storer("values")))
        keep(self.output_proj.register_forward_hook(self._storer("attention_output")))
        keep(self.ffn[-1].register_forward_hook(self._storer("ffn_output")))
        keep(self.block.register_forward_hook(self._on_block_output))
        for name, module in self.norms.items():
            if name == "norm2" and module is self.norm1:
                continue  # one norm read by both attention and FFN (parallel blocks): recorded once, as norm1
            keep(module.register_forward_pre_hook(self._input_storer(f"{name}_input")))
            keep(module.register_forward_hook(self._storer(f"{name}_output")))
        if self.key is not None:
            keep(self.key.register_forward_hook(self._storer("keys")))
        for name, (module, side) in self.sources.items():
            if side == "input":
                keep(module.register_forward_pre_hook(self._input_storer(name)))
            else:
                keep(module.register_forward_hook(self._storer(name)))
        if "output_attentions" in inspect.signature(self.attention.forward).parameters:
            # Attention classes chosen at construction (e.g. BERT's SDPA class in transformers 4.x) return their
            # weights only when asked; asking this one module keeps the model from collecting every layer's.
            keep(self.attention.register_forward_pre_hook(self._ask_for_weights, with_kwargs=True))

    def _store(self, name: str, tensor: Tensor) -> None:
        if self.session.paused:
            return
        if name in PER_TOKEN_OUTPUTS:
            # Per-token tensors: some blocks flatten the stream to [batch·seq, d] (OPT), and some update a module's
            # output in place later in the block (Falcon adds the attention output into the MLP output).
            block_input = self.slots.get("block_input")
            if tensor.dim() == 2 and block_input is not None and tensor.shape[0] == block_input.shape[:2].numel():
                tensor = tensor.view(*block_input.shape[:2], -1)
            tensor = tensor.clone()
        self.slots[name] = tensor

    def _storer(self, name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            self._store(name, first_tensor(output))

        return hook

    def _input_storer(self, name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, inputs: tuple[Any, ...]) -> None:
            self._store(name, inputs[0])

        return hook

    def _ask_for_weights(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        bound = inspect.signature(module.forward).bind_partial(*args, **kwargs)
        self.weights_requested = not bound.arguments.get("output_attentions")
        bound.arguments["output_attentions"] = True
        return bound.args, bound.kwargs

    def _on_block_input(self, _module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self.session.paused:
            return
        hidden = args[0] if args else kwargs.get("hidden_states")
        if hidden is None:
            raise ExtractionError(
                f"{self.where}: the block was called without a positional input or 'hidden_states' keyword, so "
                "the residual stream cannot be recorded; the adapter's 'blocks' must name the Transformer blocks."
            )
        self.slots.clear()
        self._store("block_input", hidden)

    def _on_attention(self, _module: nn.Module, _inputs: Any, output: Any) -> Any:
        index = self.adapter.weights_index
        weights = output[index] if isinstance(output, (tuple, list)) and len(output) > index else None
        if not isinstance(weights, Tensor) or weights.dim() != 4:
            raise ExtractionError(
                f"{self.where}: the module at adapter field 'attention' = '{self.adapter.attention}' did not return "
                f"attention weights [batch, head, query, key] at position {index} of its output (got "
                f"{_describe(weights)}); name the attention module whose forward returns (output, weights, ...) "
                "or set 'weights_index'."
            )
        self._store("alpha", weights)
        if self.weights_requested and self.adapter.strip_requested_weights:
            self.weights_requested = False
            return (*output[:index], *output[index + 1 :])
        return None

    def _on_block_output(self, _module: nn.Module, _inputs: Any, output: Any) -> None:
        if self.session.paused:
            return
        self.slots.setdefault("output", first_tensor(output))
        self.slots.setdefault("residual", self.slots.get("block_input"))
        record = self._build_record()
        self.slots.clear()
        verify_layer(record, self.model_class, tolerance_for(record.compute_dtype))
        with self.session.pause():
            self.on_layer(record)

    def _norm_record(self, prefix: str) -> NormRecord | None:
        module = self.norms.get(prefix)
        if module is None:
            return None
        if prefix == "norm2" and module is self.norm1:
            prefix = "norm1"
        weight = _detached(getattr(module, "weight", None))
        if weight is not None and self.adapter.norm_weight_offset:
            weight = weight + self.adapter.norm_weight_offset
        return NormRecord(
            kind=self.adapter.norm_kind,
            weight=weight,
            bias=_detached(getattr(module, "bias", None)),
            eps=float(getattr(module, self.adapter.norm_eps_attr)),
            input=self.slots[f"{prefix}_input"],
            output=self.slots[f"{prefix}_output"],
        )

    def _build_record(self) -> LayerRecord:
        recorded_norms = {"norm1" if m is self.norm1 else name for name, m in self.norms.items()}
        expected = {"residual", "alpha", "values", "attention_output", "ffn_output", "output"}
        expected |= {f"{name}_{side}" for name in recorded_norms for side in ("input", "output")}
        missing = expected - {name for name, value in self.slots.items() if value is not None}
        if missing:
            raise ExtractionError(
                f"{self.where}: the block ran but these parts were never recorded: {', '.join(sorted(missing))}. "
                "The modules the adapter names for them are not called by this block's forward; fix those fields."
            )
        alpha = self.slots["alpha"]
        n_heads = alpha.shape[1]
        w_o, b_o = self._output_projection(n_heads)
        d_head = w_o.shape[1]
        values = self.slots["values"]
        if self.adapter.value_split is not None:
            values = self.adapter.value_split(values, n_heads, d_head)
            values = values.reshape(*values.shape[:2], -1)
        values_bhke = self._per_head(values, n_heads, d_head)
        residual = self.slots["residual"]
        return LayerRecord(
            layer_idx=self.layer_idx,
            form=self.adapter.form,
            residual=residual,
            attention=AttentionRecord(
                alpha=alpha, values=values_bhke, w_o=w_o, b_o=b_o, output=self.slots["attention_output"]
            ),
            norm1=self._norm_record("norm1"),
            norm2=self._norm_record("norm2"),
            post_attention_norm=self._norm_record("post_attention_norm"),
            post_ffn_norm=self._norm_record("post_ffn_norm"),
            ffn_output=self.slots["ffn_output"],
            output=self.slots["output"],
            rest_of_block=self._rest_of_block(residual, self.slots["ffn_output"]),
            is_last=self.is_last,
            stack=self.stack,
        )

    def _output_projection(self, n_heads: int) -> tuple[Tensor, Tensor | None]:
        """Per-head output projection rows, detached, with any active head intervention folded in (``heads.py``)."""
        w_o, b_o = output_projection_per_head(self.output_proj, n_heads)
        if w_o.is_meta:
            raise OffloadedWeightsError(self.model_class, self.layer_idx)
        w_o, b_o = w_o.detach(), _detached(b_o)  # records never carry autograd graphs
        mix = head_mixing(self.output_proj)
        if mix is not None:
            w_o = torch.einsum("hg,hed->ged", mix.to(w_o.device, w_o.dtype), w_o)
        return w_o, b_o

    def _per_head(self, projected: Tensor, n_heads: int, d_head: int) -> Tensor:
        """``[batch, seq, kv_heads·d_head]`` → ``[batch, heads, seq, d_head]``, key/value heads repeated."""
        batch, seq, width = projected.shape
        n_kv_heads = width // d_head
        if n_kv_heads * d_head != width or n_heads % n_kv_heads:
            raise ExtractionError(
                f"{self.where}: a projection of width {width} does not split into key/value heads of size {d_head} "
                f"for {n_heads} query heads; check the adapter's 'value' (or 'value_split') and 'output_proj'."
            )
        per_head = projected.reshape(batch, seq, n_kv_heads, d_head).transpose(1, 2)
        return per_head.repeat_interleave(n_heads // n_kv_heads, dim=1) if n_kv_heads != n_heads else per_head

    def _ffn(self, h: Tensor) -> Tensor:
        for module in self.ffn:
            h = first_tensor(module(h))
        return h

    def modules(self) -> BlockModules:
        """The block's modules as callables for :mod:`inseq_mixing.block`'s recomputations."""
        return BlockModules(
            norm1=self.norm1,
            norm2=self.norm2,
            ffn=self._ffn,
            post_attention_norm=self.norms.get("post_attention_norm"),
            post_ffn_norm=self.norms.get("post_ffn_norm"),
        )

    def _rest_of_block(self, residual: Tensor, ffn_output: Tensor) -> RestOfBlock | None:
        """Recompute what follows the attention for single tokens, with the block's own modules."""
        if self.following is not None:
            return self._rest_through_cross_attention(residual)
        if not self.adapter.ffn_is_per_token:
            return None
        form, modules, final = self.adapter.form, self.modules(), self.final_norm

        def rest(attention_output: Tensor, batch_idx: Tensor, query_idx: Tensor, *, final_norm: bool = False) -> Tensor:
            with self.session.pause():
                x = residual[batch_idx, query_idx].unsqueeze(0)
                ffn = ffn_output[batch_idx, query_idx].unsqueeze(0)
                out = form.rest_of_block(modules, x, attention_output.unsqueeze(0), ffn)
                return (final(out) if final_norm and final is not None else out).squeeze(0)

        return rest

    def _rest_through_cross_attention(self, residual: Tensor) -> RestOfBlock:
        """Decoder self-attention: the residual addition, then the same block's cross-attention and FFN."""
        follow = self.following.follow_from_residual()
        form, modules = self.adapter.form, self.modules()

        def rest(attention_output: Tensor, batch_idx: Tensor, query_idx: Tensor, *, final_norm: bool = False) -> Tensor:
            with self.session.pause():
                x = residual[batch_idx, query_idx].unsqueeze(0)
                stream = form.stream_after_attention(modules, x, attention_output.unsqueeze(0)).squeeze(0)
                return follow(stream, batch_idx, final_norm)

        return rest

    def follow_from_residual(self) -> Callable[[Tensor, Tensor, bool], Tensor]:
        """Cross-attention view: ``(stream [n, d], batch_idx [n], final_norm) -> block output``, recomputing the
        cross-attention for the given decoder stream; checked against the recorded output first."""
        alpha = self.slots["alpha"]
        n_heads = alpha.shape[1]
        w_o, b_o = self._output_projection(n_heads)
        d_head = w_o.shape[1]
        scaling = float(getattr(self.attention, self.adapter.scaling_attr)) if self.adapter.scaling_attr else 1.0
        attend = cross_attention_fn(
            query=self.query,
            keys_bhse=self._per_head(self.slots["keys"], n_heads, d_head),
            values_bhse=self._per_head(self.slots["values"], n_heads, d_head),
            source_mask_bs=alpha.abs().amax(dim=(1, 2)) > 0,
            w_o_hed=w_o,
            b_o_d=b_o,
            scaling=scaling,
        )
        form, modules, final = self.adapter.form, self.modules(), self.final_norm
        reads = self.slots["norm1_output"] if form.attention_reads_norm1 else self.slots["residual"]
        batch, n_queries, d_model = reads.shape
        every_b = torch.arange(batch, device=reads.device).repeat_interleave(n_queries)
        with self.session.pause():
            rebuilt = attend(reads.reshape(-1, d_model), every_b).reshape(batch, n_queries, -1)
        error = relative_error(rebuilt, self.slots["attention_output"])
        tolerance = tolerance_for(reads.dtype)
        if not error <= tolerance:
            raise DecompositionError(
                self.model_class, self.layer_idx, "cross-attention recomputation", error, tolerance
            )

        def follow(stream: Tensor, batch_idx: Tensor, final_norm: bool) -> Tensor:
            with self.session.pause():
                output = attend(form.attention_input(modules, stream.unsqueeze(0)).squeeze(0), batch_idx)
                out = form.rest_of_block(modules, stream.unsqueeze(0), output.unsqueeze(0))
                return (final(out) if final_norm and final is not None else out).squeeze(0)

        return follow


def _views(adapter: Adapter | EncoderDecoderAdapter) -> dict[str, Adapter]:
    if isinstance(adapter, EncoderDecoderAdapter):
        return {"encoder": adapter.encoder, "decoder": adapter.decoder, "cross": adapter.cross}
    return {"layers": adapter}


@contextmanager
def recording(model: PreTrainedModel, adapter: Adapter | EncoderDecoderAdapter, on_layer: OnLayer) -> Iterator[None]:
    """Within this context, every forward of ``model`` calls ``on_layer`` with each block's verified record.

    Encoder-decoder adapters record three views (``record.stack``: ``"encoder"``, ``"decoder"``, ``"cross"``).
    Attention runs eagerly and the model in eval mode; hooks and settings are restored on exit, also on error.
    """
    session = _Session()
    recorders: list[_BlockRecorder] = []
    by_stack: dict[str, list[_BlockRecorder]] = {}
    model_class = type(model).__name__
    for stack, view in _views(adapter).items():
        blocks = resolve(model.base_model, view.blocks, field="blocks", where=model_class)
        if not isinstance(blocks, (nn.ModuleList, nn.Sequential)) or len(blocks) == 0:
            raise ExtractionError(
                f"{model_class}: adapter field 'blocks' = '{view.blocks}' is a {type(blocks).__name__}"
                f"{' with no blocks' if isinstance(blocks, (nn.ModuleList, nn.Sequential)) else ''}; expected the "
                "ModuleList of Transformer blocks."
            )
        stack_recorders = [
            _BlockRecorder(idx, block, view, model_class, on_layer, session, stack) for idx, block in enumerate(blocks)
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
    # Every path is resolved above; from here on each hook's removal is registered the moment the hook exists.
    with ExitStack() as hooks, eager_attention(model), eval_mode(model), torch.no_grad():
        for recorder in recorders:
            recorder.attach(hooks)
        yield


def _describe(value: Any) -> str:
    return f"a tensor of shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__


def _detached(tensor: Tensor | None) -> Tensor | None:
    return None if tensor is None else tensor.detach()
