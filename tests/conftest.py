"""Fixtures parametrized over every supported architecture that has a tiny test config."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from transformers import PreTrainedModel

from ._helpers import SUPPORTED_TINY_TYPES, tiny_model


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> Iterator[None]:
    """Run single-threaded: for models this small, intra-op threads only add overhead (large on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(params=SUPPORTED_TINY_TYPES)
def model_type(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def model(model_type: str) -> PreTrainedModel:
    return tiny_model(model_type)
