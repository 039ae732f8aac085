"""The docs stay in step with the code's tables."""

from __future__ import annotations

import pathlib

from inseq_mixing.extract import ADAPTERS
from inseq_mixing.measures import MEASURES

DOCS = pathlib.Path(__file__).parents[1] / "docs"


def test_every_measure_has_a_docs_page() -> None:
    pages = {page.stem for page in (DOCS / "measures").glob("*.md")}
    assert set(MEASURES) <= pages


def test_architectures_page_lists_every_model_type() -> None:
    text = (DOCS / "architectures.md").read_text()
    missing = [model_type for model_type in ADAPTERS if f"`{model_type}`" not in text]
    assert not missing
