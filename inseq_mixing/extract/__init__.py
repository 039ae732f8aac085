"""Per-architecture extractors: adapters keyed by ``config.model_type`` and the hooks that record each layer.

This is the only subpackage that touches ``nn.Module``s and hooks. To support a new family, write an
:class:`Adapter` in its own module and add one line to :data:`ADAPTERS`.
"""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel

from ..errors import UnsupportedArchitectureError
from ._adapter import Adapter, EncoderDecoderAdapter
from ._hooks import OnLayer, recording
from ._modules import eager_attention, resolve
from .bart import BART, MBART
from .bert import BERT
from .distilbert import DISTILBERT
from .gpt2 import GPT2
from .llama import LLAMA
from .t5 import T5

ADAPTERS: dict[str, Adapter | EncoderDecoderAdapter] = {
    "bart": BART,
    "marian": BART,
    "mbart": MBART,
    "m2m_100": MBART,
    "t5": T5,
    "mt5": T5,
    "bert": BERT,
    "roberta": BERT,
    "distilbert": DISTILBERT,
    "gpt2": GPT2,
    "llama": LLAMA,
    "mistral": LLAMA,
    "qwen2": LLAMA,
}
"""The single table of supported architectures, keyed by ``config.model_type``."""


def get_adapter(model: PreTrainedModel) -> Adapter | EncoderDecoderAdapter:
    """Return the adapter for ``model``'s architecture.

    Raises:
        UnsupportedArchitectureError: If ``config.model_type`` has no adapter.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ADAPTERS:
        raise UnsupportedArchitectureError(
            f"Unsupported architecture '{type(model).__name__}' (model_type={model_type!r}); supported model types: "
            f"{', '.join(sorted(ADAPTERS))}. See docs/architectures.md to add an adapter for your model."
        )
    return ADAPTERS[model_type]


def stacks_of(adapter: Adapter | EncoderDecoderAdapter) -> tuple[str, ...]:
    """The record stacks an adapter produces: ``("layers",)`` or ``("encoder", "decoder", "cross")``."""
    return ("encoder", "decoder", "cross") if isinstance(adapter, EncoderDecoderAdapter) else ("layers",)


def blocks_of(model: PreTrainedModel, stack: str = "layers") -> nn.ModuleList:
    """The model's list of Transformer blocks (of ``stack`` for encoder-decoders), as its adapter declares it."""
    adapter = get_adapter(model)
    if isinstance(adapter, EncoderDecoderAdapter):
        adapter = getattr(adapter, stack if stack != "layers" else "encoder")
    return resolve(model.base_model, adapter.blocks)  # type: ignore[return-value]


__all__ = [
    "ADAPTERS",
    "Adapter",
    "EncoderDecoderAdapter",
    "OnLayer",
    "blocks_of",
    "eager_attention",
    "get_adapter",
    "recording",
    "stacks_of",
]
