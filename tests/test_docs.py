"""The docs stay in step with the code's tables."""

from __future__ import annotations

import pathlib

from inseq_mixing.extract import ADAPTERS
from inseq_mixing.extract.describe import architectures_markdown
from inseq_mixing.measures import MEASURES

DOCS = pathlib.Path(__file__).parents[1] / "docs"


def test_every_measure_has_a_docs_page() -> None:
    pages = {page.stem for page in (DOCS / "measures").glob("*.md")}
    assert set(MEASURES) <= pages


def test_architectures_page_is_generated_from_the_adapter_table() -> None:
    """Regenerate with ``python docs/gen_architectures.py`` after changing the table."""
    text = (DOCS / "architectures.md").read_text()
    assert text == architectures_markdown(ADAPTERS)
    assert all(f"`{model_type}`" in text for model_type in ADAPTERS)
