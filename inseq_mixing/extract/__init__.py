"""Per-architecture extractors: adapters keyed by ``config.model_type`` and the hooks that record each layer.

This is the only subpackage that touches ``nn.Module``s and hooks. To support a new family, write an
:class:`Adapter` in its own module and add one line to :data:`ADAPTERS`.
"""

from __future__ import annotations

from torch import nn
from transformers import PreTrainedModel

from ..errors import UnsupportedArchitectureError
from ._adapter import Adapter, AdapterChoice, EncoderDecoderAdapter, FFNParts
from ._modules import bare_model, eager_attention, resolve
from ._recording import OnHead, OnLayer, recording
from .bart import BART, MBART
from .bert import BERT, ELECTRA, ROBERTA
from .bloom import BLOOM
from .deberta import DEBERTA_V2_CHOICE
from .distilbert import DISTILBERT
from .falcon import FALCON_CHOICE
from .gemma import GEMMA, GEMMA2, GEMMA3
from .gpt2 import GPT2
from .gptj import CODEGEN, GPTJ
from .llama import LLAMA
from .llama_like import QWEN3, STABLELM_CHOICE
from .neox import GPT_NEOX_CHOICE
from .olmo2 import OLMO2
from .opt import OPT_CHOICE, XGLM
from .phi import PHI, PHI3
from .t5 import T5

ADAPTERS: dict[str, Adapter | EncoderDecoderAdapter | AdapterChoice] = {
    "bart": BART,
    "marian": BART,
    "mbart": MBART,
    "m2m_100": MBART,
    "t5": T5,
    "mt5": T5,
    "bert": BERT,
    "electra": ELECTRA,
    "deberta-v2": DEBERTA_V2_CHOICE,
    "gemma": GEMMA,
    "gemma2": GEMMA2,
    "gemma3_text": GEMMA3,
    "olmo2": OLMO2,
    "roberta": ROBERTA,
    "distilbert": DISTILBERT,
    "gpt2": GPT2,
    "llama": LLAMA,
    "mistral": LLAMA,
    "qwen2": LLAMA,
    "qwen3": QWEN3,
    "stablelm": STABLELM_CHOICE,
    "phi3": PHI3,
    "phi": PHI,
    "gpt_neox": GPT_NEOX_CHOICE,
    "gptj": GPTJ,
    "codegen": CODEGEN,
    "bloom": BLOOM,
    "xglm": XGLM,
    "opt": OPT_CHOICE,
    "falcon": FALCON_CHOICE,
}
"""The single table of supported architectures, keyed by ``config.model_type``."""


def get_adapter(model: PreTrainedModel) -> Adapter | EncoderDecoderAdapter:
    """Return the adapter for ``model``'s architecture.

    Raises:
        UnsupportedArchitectureError: If ``config.model_type`` has no adapter, or its config selects a layout that
            is not covered.
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ADAPTERS:
        raise UnsupportedArchitectureError(
            f"Unsupported architecture '{type(model).__name__}' (model_type={model_type!r}); supported model types: "
            f"{', '.join(sorted(ADAPTERS))}. See docs/architectures.md to add an adapter for your model."
        )
    adapter = ADAPTERS[model_type]
    return adapter.choose(model.config) if isinstance(adapter, AdapterChoice) else adapter


def register_adapter(model_type: str, adapter: Adapter | EncoderDecoderAdapter | AdapterChoice) -> None:
    """Support models whose ``config.model_type`` is ``model_type`` with ``adapter`` (replacing any earlier one).

    Raises:
        TypeError: If ``adapter`` is not an :class:`Adapter` or :class:`EncoderDecoderAdapter`.
    """
    if not isinstance(adapter, (Adapter, EncoderDecoderAdapter, AdapterChoice)):
        raise TypeError(
            "register_adapter expects an Adapter, EncoderDecoderAdapter or AdapterChoice; "
            f"got {type(adapter).__name__}."
        )
    ADAPTERS[model_type] = adapter


def stacks_of(adapter: Adapter | EncoderDecoderAdapter) -> tuple[str, ...]:
    """The record stacks an adapter produces: ``("layers",)`` or ``("encoder", "decoder", "cross")``."""
    return ("encoder", "decoder", "cross") if isinstance(adapter, EncoderDecoderAdapter) else ("layers",)


def blocks_of(model: PreTrainedModel, stack: str = "layers") -> nn.ModuleList:
    """The model's list of Transformer blocks (of ``stack`` for encoder-decoders), as its adapter declares it."""
    adapter = get_adapter(model)
    if isinstance(adapter, EncoderDecoderAdapter):
        adapter = getattr(adapter, stack if stack != "layers" else "encoder")
    return resolve(bare_model(model), adapter.blocks, field="blocks", where=type(model).__name__)  # type: ignore[return-value]


__all__ = [
    "ADAPTERS",
    "Adapter",
    "AdapterChoice",
    "EncoderDecoderAdapter",
    "FFNParts",
    "OnHead",
    "OnLayer",
    "bare_model",
    "blocks_of",
    "eager_attention",
    "get_adapter",
    "recording",
    "register_adapter",
    "stacks_of",
]
