"""Fixtures parametrized over every supported architecture that has a tiny test config."""

from __future__ import annotations

import pytest
from transformers import PreTrainedModel

from ._helpers import SUPPORTED_TINY_TYPES, tiny_model


@pytest.fixture(params=SUPPORTED_TINY_TYPES)
def model_type(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def model(model_type: str) -> PreTrainedModel:
    return tiny_model(model_type)
