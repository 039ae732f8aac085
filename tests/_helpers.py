"""Helpers shared by the tests: tiny models of every supported family, sample inputs, record collection."""

from __future__ import annotations

import functools
import pathlib

import torch
from transformers import PreTrainedModel

from inseq_mixing.extract import ADAPTERS, Adapter, EncoderDecoderAdapter, recording
from inseq_mixing.extract import get_adapter as _get_adapter
from inseq_mixing.measures import MEASURES, Measure
from inseq_mixing.record import LayerRecord

from ._tiny_models import TINY_CONFIGS, build_tiny_model

REFERENCE_DIR = pathlib.Path(__file__).parent / "data" / "reference"

SUPPORTED_TINY_TYPES = tuple(sorted(t for t in ADAPTERS if t in TINY_CONFIGS and isinstance(ADAPTERS[t], Adapter)))
"""Every single-stack (encoder-only or decoder-only) adapter's model type that has a tiny test config."""

SUPPORTED_SEQ2SEQ_TYPES = tuple(
    sorted(t for t in ADAPTERS if t in TINY_CONFIGS and isinstance(ADAPTERS[t], EncoderDecoderAdapter))
)
"""Every encoder-decoder adapter's model type that has a tiny test config."""


LAYER_MEASURES: dict[str, Measure] = {
    name: m for name, m in MEASURES.items() if m.fn is not None and m.fn.__name__ == name and not m.needs_ffn
}
"""Every per-layer measure function once (``attention_rollout`` is ``attention``'s function, rolled out) that reads
only the attention block's record (those that read the FFN's parts have their own tests)."""


def supports(method: str, model: PreTrainedModel) -> bool:
    """Whether the measure table declares ``method`` available for ``model``'s kind and block layout."""
    measure, adapter = MEASURES[method], _get_adapter(model)
    if isinstance(adapter, EncoderDecoderAdapter):
        return "encoder-decoder" in measure.kinds
    return ("decoder" if adapter.is_causal else "encoder") in measure.kinds and adapter.layout in measure.layouts


@functools.cache
def tiny_model(model_type: str, seed: int = 0) -> PreTrainedModel:
    """A cached tiny random model of ``model_type`` (non-trivial norm weights and biases)."""
    return build_tiny_model(model_type, seed=seed)


def sample_inputs(model: PreTrainedModel, batch: int = 2, seq: int = 7, seed: int = 0) -> torch.Tensor:
    """Random token ids avoiding special tokens (ids < 5)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(5, model.config.vocab_size, (batch, seq), generator=generator)


def collect_records(model: PreTrainedModel, input_ids: torch.Tensor, **kwargs) -> list[LayerRecord]:
    """Run a forward pass and keep every layer's verified record (pass ``decoder_input_ids`` to encoder-decoders)."""
    records: list[LayerRecord] = []
    if "decoder_input_ids" in kwargs:
        kwargs.setdefault("use_cache", False)
    with recording(model, _get_adapter(model), records.append):
        model.base_model(input_ids=input_ids, **kwargs)
    return records
