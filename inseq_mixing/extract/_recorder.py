"""Recording: the forward hooks of one block (one view of it) and the tensors they keep.

Hooks read only module boundaries (inputs and outputs of projections, norms, the attention module and the block).
When the block finishes, the recorder hands its slots to ``emit`` (assembly, verification and the measures, wired by
:func:`~inseq_mixing.extract._recording.recording`) and forgets them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ..errors import ExtractionError
from ._adapter import Adapter, FFNParts
from ._modules import first_tensor, resolve

PER_TOKEN_OUTPUTS = frozenset(
    {"attention_output", "ffn_output", "norm1_input", "norm1_output", "norm2_input", "norm2_output",
     "post_attention_norm_input", "post_attention_norm_output", "post_ffn_norm_input", "post_ffn_norm_output",
     "residual", "output", "value_input", "ffn_input", "ffn_gate", "ffn_act_input", "ffn_activated", "ffn_up",
     "ffn_out"}
)  # fmt: skip
"""Slots holding one vector per token (``[batch, seq, width]``)."""

NORM_SLOTS = ("norm1", "norm2", "post_attention_norm", "post_ffn_norm")


class Session:
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


class BlockRecorder:
    """The hooks of one block for one adapter view: resolves every part first, then records its tensors."""

    def __init__(
        self,
        layer_idx: int,
        block: nn.Module,
        adapter: Adapter,
        model_class: str,
        session: Session,
        stack: str,
        *,
        record_ffn: bool = False,
    ) -> None:
        self.layer_idx = layer_idx
        self.block = block
        self.adapter = adapter
        self.model_class = model_class
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
            name: part(name, getattr(adapter, name)) for name in NORM_SLOTS if getattr(adapter, name) is not None
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
        self.ffn_parts: FFNParts | None = None
        self.ffn_modules: dict[str, nn.Module] = {}
        if record_ffn:
            self.ffn_parts, self.ffn_modules = self._resolve_ffn_parts()
        self.final_norm: nn.Module | None = None  # the stack's final norm, set on its last block only
        self.following: BlockRecorder | None = None  # decoder self-attention: the same block's cross-attention
        self.is_last = False
        self.slots: dict[str, Tensor] = {}
        self.weights_requested = False
        self.emit: Callable[[BlockRecorder, dict[str, Tensor]], None] = lambda recorder, slots: None

    def _resolve_ffn_parts(self) -> tuple[FFNParts, dict[str, nn.Module]]:
        """The first declared FFN layout whose modules all exist in this block (e.g. T5's gated or plain FFN)."""
        declared = self.adapter.ffn_parts
        if declared is None:
            raise ExtractionError(
                f"{self.where}: the adapter declares no 'ffn_parts', which a measure through the FFN needs; see "
                "docs/architectures.md for how to declare them."
            )
        layouts = declared if isinstance(declared, tuple) else (declared,)
        for layout in layouts:
            paths = {"gate": layout.gate, "act": layout.act, "out": layout.out, "up": layout.up}
            found = {k: _maybe(self.block, p) for k, p in paths.items() if p is not None}
            if all(module is not None for module in found.values()):
                return layout, found  # type: ignore[return-value]
        resolve(self.block, layouts[0].gate, field="ffn_parts", where=self.where)  # raises naming the first path
        raise ExtractionError(f"{self.where}: no declared 'ffn_parts' layout matches this block's modules.")

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
        if self.ffn_parts is not None:  # decomposition-grade records: what the value projection reads, too
            keep(self.value.register_forward_pre_hook(self._input_storer("value_input")))
        for name, module in self.ffn_modules.items():
            if name == "gate":
                keep(module.register_forward_pre_hook(self._input_storer("ffn_input")))
            if name == "act":
                keep(module.register_forward_pre_hook(self._input_storer("ffn_act_input")))
                keep(module.register_forward_hook(self._storer("ffn_activated")))
            else:
                keep(module.register_forward_hook(self._storer(f"ffn_{name}")))
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
        slots, self.slots = self.slots, {}
        self.emit(self, slots)


def _maybe(root: nn.Module, path: str) -> nn.Module | None:
    module = root
    for name in path.split("."):
        module = getattr(module, name, None)
        if not isinstance(module, nn.Module):
            return None
    return module


def _describe(value: Any) -> str:
    return f"a tensor of shape {tuple(value.shape)}" if isinstance(value, Tensor) else type(value).__name__
