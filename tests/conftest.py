"""Fixtures parametrized over every supported architecture that has a tiny test config."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch
import transformers
from transformers import PreTrainedModel

from ._helpers import SUPPORTED_TINY_TYPES, tiny_model

EXPECTED_TRANSFORMERS = os.environ.get("INSEQ_MIXING_EXPECT_TRANSFORMERS")
"""The transformers version a tox env installs (``4.57``, ``5``); unset outside tox."""


def _matches(version: str, expected: str) -> bool:
    return version == expected or version.startswith(expected + ".")


def pytest_report_header() -> str:
    expected = EXPECTED_TRANSFORMERS or "any"
    return f"transformers {transformers.__version__} (expected: {expected}), torch {torch.__version__}"


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fail at once when the env runs another transformers than it names (a dependency upgraded it)."""
    if EXPECTED_TRANSFORMERS and not _matches(transformers.__version__, EXPECTED_TRANSFORMERS):
        raise pytest.UsageError(
            f"This env expects transformers {EXPECTED_TRANSFORMERS}.x (INSEQ_MIXING_EXPECT_TRANSFORMERS) but runs "
            f"{transformers.__version__}: an install step changed it. Pin it for every step (.ci/constraints-*.txt)."
        )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    """A test marked ``required_in_expected_env(version)`` that skips in that env fails instead."""
    report = yield
    marker = item.get_closest_marker("required_in_expected_env")
    if marker and report.skipped and EXPECTED_TRANSFORMERS and _matches(EXPECTED_TRANSFORMERS, marker.args[0]):
        report.outcome = "failed"
        report.longrepr = f"{item.nodeid} must run in the transformers {EXPECTED_TRANSFORMERS} env but was skipped."
    return report


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
