"""Generic machinery that turns an :class:`Adapter` into forward hooks producing one :class:`LayerRecord` per block.

Hooks read only module boundaries (inputs and outputs of projections, norms, the attention module and the block).
Each block's record is assembled when the block finishes, verified against the real outputs, handed to a callback
and dropped, so at most one layer's attention weights are held at a time.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle
from transformers import PretrainedConfig, PreTrainedModel
from transformers.pytorch_utils import Conv1D

from ..errors import DecompositionError, UnsupportedArchitectureError
from ..record import AttentionRecord, LayerRecord, NormRecord, RestOfBlock
from ._adapter import Adapter, EncoderDecoderAdapter
from ._verify import tolerance_for, verify_layer

OnLayer = Callable[[LayerRecord], None]


def resolve(root: nn.Module, path: str) -> nn.Module:
    """Return the submodule at dotted ``path``; raise :class:`UnsupportedArchitectureError` if it is missing."""
    module = root
    for name in path.split("."):
        if not hasattr(module, name):
            raise UnsupportedArchitectureError(
                f"{type(root).__name__} has no submodule '{path}' (missing '{name}'); the adapter does not match "
                "this model's structure."
            )
        module = getattr(module, name)
    return module


def _first_tensor(output: Any) -> Tensor:
    return output[0] if isinstance(output, (tuple, list)) else output


def _configs_of(model: nn.Module) -> list[PretrainedConfig]:
    seen: dict[int, PretrainedConfig] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if isinstance(config, PretrainedConfig):
            seen.setdefault(id(config), config)
            for key in getattr(config, "sub_configs", {}) or {}:
                sub = getattr(config, key, None)
                if isinstance(sub, PretrainedConfig):
                    seen.setdefault(id(sub), sub)
    return list(seen.values())


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Run ``model`` with eager attention (which returns the attention weights), restoring the setting after."""
    saved = [(config, config.__dict__.get("_attn_implementation_internal")) for config in _configs_of(model)]
    try:
        for config, _ in saved:
            config.__dict__["_attn_implementation_internal"] = "eager"
        yield
    finally:
        for config, value in saved:
            config.__dict__["_attn_implementation_internal"] = value


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode (no dropout), restoring its training flag after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def output_projection_per_head(module: nn.Module, n_heads: int) -> tuple[Tensor, Tensor | None]:
    """Split an output projection into per-head rows ``[head, d_head, d_model]`` and its bias."""
    if isinstance(module, nn.Linear):
        weight = module.weight.t()
    elif isinstance(module, Conv1D):
        weight = module.weight
    else:
        raise UnsupportedArchitectureError(
            f"Output projection of type {type(module).__name__} is not supported; expected nn.Linear or Conv1D."
        )
    d_in, d_model = weight.shape
    return weight.reshape(n_heads, d_in // n_heads, d_model), module.bias


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
        self.attention = resolve(block, adapter.attention)
        self.value = resolve(block, adapter.value)
        self.output_proj = resolve(block, adapter.output_proj)
        self.norm1 = resolve(block, adapter.norm1)
        self.norm2 = resolve(block, adapter.norm2)
        self.ffn = [resolve(block, path) for path in adapter.ffn]
        self.final_norm: nn.Module | None = None  # the stack's final norm, set on its last block only
        self.slots: dict[str, Tensor] = {}
        self.is_last = False
        self.weights_requested = False

    def attach(self) -> list[RemovableHandle]:
        """Register the hooks; the caller removes the returned handles."""
        handles = [
            self.block.register_forward_pre_hook(self._on_block_input, with_kwargs=True),
            self.attention.register_forward_hook(self._on_attention),
            self.value.register_forward_hook(self._storer("values")),
            self.output_proj.register_forward_hook(self._storer("attention_output")),
            self.norm1.register_forward_pre_hook(self._input_storer("norm1_input")),
            self.norm1.register_forward_hook(self._storer("norm1_output")),
            self.norm2.register_forward_pre_hook(self._input_storer("norm2_input")),
            self.norm2.register_forward_hook(self._storer("norm2_output")),
            self.ffn[-1].register_forward_hook(self._storer("ffn_output")),
            self.block.register_forward_hook(self._on_block_output),
        ]
        for name, source in (("residual", self.adapter.residual_source), ("output", self.adapter.output_source)):
            if source is not None:
                module, side = resolve(self.block, source[0]), source[1]
                hook = self._input_storer(name) if side == "input" else self._storer(name)
                register = module.register_forward_pre_hook if side == "input" else module.register_forward_hook
                handles.append(register(hook))
        if "output_attentions" in inspect.signature(self.attention.forward).parameters:
            # Attention classes chosen at construction (e.g. BERT's SDPA class in transformers 4.x) return their
            # weights only when asked; asking this one module keeps the model from collecting every layer's.
            handles.append(self.attention.register_forward_pre_hook(self._ask_for_weights, with_kwargs=True))
        return handles

    def _store(self, name: str, tensor: Tensor) -> None:
        if not self.session.paused:
            self.slots[name] = tensor

    def _storer(self, name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
            self._store(name, _first_tensor(output))

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
            raise UnsupportedArchitectureError(
                f"{self.model_class}: block {self.layer_idx} was called without a positional input or "
                "'hidden_states' keyword; cannot record the residual stream."
            )
        self.slots.clear()
        self._store("block_input", hidden)

    def _on_attention(self, _module: nn.Module, _inputs: Any, output: Any) -> Any:
        index = self.adapter.weights_index
        weights = output[index] if isinstance(output, (tuple, list)) and len(output) > index else None
        if not isinstance(weights, Tensor) or weights.dim() != 4:
            raise DecompositionError(self.model_class, self.layer_idx, "attention weights returned", float("inf"), 0)
        self._store("alpha", weights)
        if self.weights_requested and self.adapter.strip_requested_weights:
            self.weights_requested = False
            return (*output[:index], *output[index + 1 :])
        return None

    def _on_block_output(self, _module: nn.Module, _inputs: Any, output: Any) -> None:
        if self.session.paused:
            return
        self.slots.setdefault("output", _first_tensor(output))
        self.slots.setdefault("residual", self.slots.get("block_input"))
        record = self._build_record()
        self.slots.clear()
        verify_layer(record, self.model_class, tolerance_for(record.output.dtype))
        with self.session.pause():
            self.on_layer(record)

    def _norm_record(self, module: nn.Module, prefix: str) -> NormRecord:
        weight = getattr(module, "weight", None)
        if weight is not None and self.adapter.norm_weight_offset:
            weight = weight + self.adapter.norm_weight_offset
        return NormRecord(
            kind=self.adapter.norm_kind,
            weight=weight,
            bias=getattr(module, "bias", None),
            eps=float(getattr(module, self.adapter.norm_eps_attr)),
            input=self.slots[f"{prefix}_input"],
            output=self.slots[f"{prefix}_output"],
        )

    def _build_record(self) -> LayerRecord:
        missing = {
            "residual", "alpha", "values", "attention_output", "norm1_input", "norm1_output", "norm2_input",
            "norm2_output", "ffn_output", "output",
        } - {name for name, value in self.slots.items() if value is not None}  # fmt: skip
        if missing:
            raise DecompositionError(
                self.model_class, self.layer_idx, f"hooks fired for all parts (missing: {sorted(missing)})",
                float("inf"), 0,
            )  # fmt: skip
        alpha = self.slots["alpha"]
        n_heads = alpha.shape[1]
        w_o, b_o = output_projection_per_head(self.output_proj, n_heads)
        d_head = w_o.shape[1]
        values = self.slots["values"]
        if self.adapter.value_split is not None:
            values = self.adapter.value_split(values, n_heads, d_head)
        batch, n_keys, width = values.shape
        n_kv_heads = width // d_head
        if n_kv_heads * d_head != width or n_heads % n_kv_heads:
            raise DecompositionError(self.model_class, self.layer_idx, "value heads layout", float("inf"), 0)
        values_bhke = values.reshape(batch, n_keys, n_kv_heads, d_head).transpose(1, 2)
        if n_kv_heads != n_heads:
            values_bhke = values_bhke.repeat_interleave(n_heads // n_kv_heads, dim=1)
        residual = self.slots["residual"]
        return LayerRecord(
            layer_idx=self.layer_idx,
            pre_norm=self.adapter.pre_norm,
            residual=residual,
            attention=AttentionRecord(
                alpha=alpha, values=values_bhke, w_o=w_o, b_o=b_o, output=self.slots["attention_output"]
            ),
            norm1=self._norm_record(self.norm1, "norm1"),
            norm2=self._norm_record(self.norm2, "norm2"),
            ffn_output=self.slots["ffn_output"],
            output=self.slots["output"],
            rest_of_block=self._rest_of_block(residual) if self.adapter.ffn_is_per_token else None,
            is_last=self.is_last,
            stack=self.stack,
            is_cross_attention=self.adapter.is_cross_attention,
        )

    def _rest_of_block(self, residual: Tensor) -> RestOfBlock:
        """Recompute what follows the attention for single tokens, with the block's own modules."""

        def ffn(h: Tensor) -> Tensor:
            for module in self.ffn:
                h = _first_tensor(module(h))
            return h

        def rest(attention_output: Tensor, batch_idx: Tensor, query_idx: Tensor, *, final_norm: bool = False) -> Tensor:
            x = residual[batch_idx, query_idx].unsqueeze(0)
            attention_output = attention_output.to(x.dtype).unsqueeze(0)
            with self.session.pause():
                if self.adapter.pre_norm:
                    m = x + attention_output
                    out = m + ffn(self.norm2(m))
                else:
                    h = self.norm1(x + attention_output)
                    out = self.norm2(h + ffn(h))
                if final_norm and self.final_norm is not None:
                    out = self.final_norm(out)
            return out.squeeze(0)

        return rest


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
    for stack, view in _views(adapter).items():
        blocks = resolve(model.base_model, view.blocks)
        stack_recorders = [
            _BlockRecorder(idx, block, view, type(model).__name__, on_layer, session, stack)
            for idx, block in enumerate(blocks)
        ]
        stack_recorders[-1].is_last = True
        if view.final_norm is not None:
            stack_recorders[-1].final_norm = resolve(model.base_model, view.final_norm)
        recorders.extend(stack_recorders)
    handles: list[RemovableHandle] = []
    try:
        with eager_attention(model), eval_mode(model), torch.no_grad():
            for recorder in recorders:
                handles.extend(recorder.attach())
            yield
    finally:
        for handle in handles:
            handle.remove()
