"""Per-architecture extractors: adapters keyed by ``config.model_type`` and the hooks that record each layer.

This is the only subpackage that touches ``nn.Module``s and hooks. To support a new family, write an
:class:`Adapter` in its own module and add one line to :data:`ADAPTERS`.
"""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel

from ..errors import UnsupportedArchitectureError
from ._adapter import Adapter
from ._hooks import OnLayer, eager_attention, recording, resolve
from .bert import BERT
from .distilbert import DISTILBERT
from .gpt2 import GPT2
from .llama import LLAMA

ADAPTERS: dict[str, Adapter] = {
    "bert": BERT,
    "roberta": BERT,
    "distilbert": DISTILBERT,
    "gpt2": GPT2,
    "llama": LLAMA,
    "mistral": LLAMA,
    "qwen2": LLAMA,
}
"""The single table of supported architectures, keyed by ``config.model_type``."""


def get_adapter(model: PreTrainedModel) -> Adapter:
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


def blocks_of(model: PreTrainedModel) -> nn.ModuleList:
    """The model's list of Transformer blocks, as its adapter declares it."""
    return resolve(model.base_model, get_adapter(model).blocks)  # type: ignore[return-value]


__all__ = ["ADAPTERS", "Adapter", "OnLayer", "blocks_of", "eager_attention", "get_adapter", "recording"]
