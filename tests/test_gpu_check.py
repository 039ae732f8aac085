"""The GPU check script runs end to end on its tiny CPU shape and writes complete, consistent results."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gpu_check() -> ModuleType:
    return _load()


@pytest.fixture(scope="module")
def run(gpu_check: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One tiny CPU run with --profile, every time target made unreachable so that the profiling path runs too."""
    out = tmp_path_factory.mktemp("gpu_check")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gpu_check, "TIME_TARGETS", dict.fromkeys(gpu_check.TIME_TARGETS, 1e-3))
        gpu_check.main(["--tiny", "--device", "cpu", "--profile", "--out", str(out)])
    return out, json.loads((out / "gpu_check.json").read_text())


def _table_rows(markdown: str, heading: str) -> list[list[str]]:
    """The body rows of the first table after ``heading``, split into cells."""
    section = markdown.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows[2:]]


def test_every_measure_at_every_length(gpu_check: ModuleType, run: tuple[Path, dict[str, Any]]) -> None:
    _, data = run
    defaults = gpu_check.DEFAULTS["tiny"]
    lengths, vz_length = defaults["lengths"], defaults["value_zeroing_length"]
    expected = {(gpu_check.FORWARD, n) for n in (*lengths, vz_length)}
    expected |= {(method, n) for method in gpu_check.LENGTH_MEASURES for n in lengths}
    expected |= {(gpu_check.SHORT_MEASURE, min(lengths)), (gpu_check.VALUE_ZEROING, vz_length)}
    rows = data["measurements"]
    assert sorted((row["method"], row["n"]) for row in rows) == sorted(expected)
    for row in rows:
        assert row["error"] is None, row
        assert math.isfinite(row["seconds"]) and row["seconds"] > 0, row
        assert math.isfinite(row["time_ratio"]) and row["time_ratio"] > 0, row
        assert row["peak_bytes"] is None and row["peak_ratio"] is None  # no memory stats off CUDA
    for key in ("date", "torch", "transformers", "cuda", "gpu", "peak_convention"):
        assert key in data["meta"]


def test_agreement_within_bound(gpu_check: ModuleType, run: tuple[Path, dict[str, Any]]) -> None:
    _, data = run
    rows = {row["method"]: row for row in data["agreement"]}
    assert set(rows) == set(gpu_check.MEASURES)
    for method, row in rows.items():
        assert row["error"] is None, row
        assert row["bound"] == gpu_check.AGREEMENT_BOUNDS["bfloat16"]
        assert 0 <= row["max_abs_diff"] < row["bound"] and row["pass"], method


def test_missed_targets_are_profiled(gpu_check: ModuleType, run: tuple[Path, dict[str, Any]]) -> None:
    _, data = run
    missed = {(row["method"], row["n"]) for row in data["measurements"] if row["missed"]}
    expected = {(method, min(gpu_check.DEFAULTS["tiny"]["lengths"])) for method in gpu_check.TIME_TARGETS}
    assert missed == expected
    assert {(profile["method"], profile["n"]) for profile in data["profiles"]} == missed
    for profile in data["profiles"]:
        assert profile["error"] is None
        assert 0 < len(profile["kernels"]) <= gpu_check.TOP_KERNELS
        assert all(kernel["self_us"] > 0 and kernel["calls"] > 0 for kernel in profile["kernels"])


def test_markdown_has_one_row_per_measurement(run: tuple[Path, dict[str, Any]]) -> None:
    out, data = run
    markdown = (out / "gpu_check.md").read_text()
    rows = _table_rows(markdown, "## Measures")
    assert [(row[1], int(row[0])) for row in rows] == [(row["method"], row["n"]) for row in data["measurements"]]
    assert len(_table_rows(markdown, "agreement")) == len(data["agreement"])
    assert data["meta"]["torch"] in markdown and "above the memory allocated before the call" in markdown
