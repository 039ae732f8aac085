"""Tiny decoder-only models saved to disk, loaded by inseq from their path."""

from __future__ import annotations

import functools
import pathlib
import tempfile

import inseq
import pytest

from .._tiny_models import AUTO_TOKENIZER_UNFAITHFUL, load_tokenizer, save_tiny

INSEQ_MODEL_TYPES = ("gpt2", "llama", "qwen2")
_SAVE_ROOT = pathlib.Path(tempfile.mkdtemp(prefix="inseq_mixing_models_"))


@functools.cache
def saved_model(model_type: str) -> pathlib.Path:
    """The tiny ``model_type`` causal LM saved with its tokenizer (once per test session)."""
    return save_tiny(model_type, _SAVE_ROOT / model_type)


def load(model_type: str, method: str) -> inseq.models.AttributionModel:
    """``inseq.load_model`` on the saved path (qwen2's path-loaded tokenizer is replaced on transformers 5)."""
    path = saved_model(model_type)
    kwargs = {"tokenizer": load_tokenizer(path)} if model_type in AUTO_TOKENIZER_UNFAITHFUL else {}
    return inseq.load_model(str(path), method, **kwargs)


@pytest.fixture(params=INSEQ_MODEL_TYPES)
def inseq_model_type(request: pytest.FixtureRequest) -> str:
    return request.param
