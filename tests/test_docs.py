"""The docs stay in step with the code's tables (regenerate with ``python docs/gen_architectures.py``)."""

from __future__ import annotations

import importlib.util
import pathlib
import re

import pytest

from inseq_mixing.extract import ADAPTERS
from inseq_mixing.measures import MEASURES
from inseq_mixing.mixing import METHODS

ROOT = pathlib.Path(__file__).parents[1]
DOCS = ROOT / "docs"


def generator():
    """``docs/gen_architectures.py``, imported as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("gen_architectures", DOCS / "gen_architectures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATED = generator().generated()


def test_every_measure_has_a_docs_page() -> None:
    """One page per measure function; a method that rolls a measure out (``attention_rollout``) is on its page."""
    pages = {page.stem: page.read_text() for page in (DOCS / "measures").glob("*.md")}
    for name, measure in MEASURES.items():
        page = measure.fn.__name__ if measure.fn is not None else name
        assert page in pages and f"`{name}`" in pages[page], name


@pytest.mark.parametrize("path", sorted(GENERATED), ids=lambda path: str(path.relative_to(ROOT)))
def test_generated_docs_match_what_the_generator_writes(path: pathlib.Path) -> None:
    """Fails when the adapter or method table changed and ``python docs/gen_architectures.py`` was not rerun."""
    assert path.read_text() == GENERATED[path]


def test_architectures_page_names_every_model_type() -> None:
    text = (DOCS / "architectures.md").read_text()
    assert all(f"`{model_type}`" in text for model_type in ADAPTERS)


def test_readme_states_how_many_model_types_are_supported_and_names_each() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- architectures:start -->(.*?)<!-- architectures:end -->", readme, re.S).group(1)
    assert f" {len(ADAPTERS)} `config.model_type`s" in block
    assert sorted(re.findall(r"`([\w-]+)`", block.replace("`config.model_type`", ""))) == sorted(
        [*ADAPTERS, "UnsupportedArchitectureError"]
    )
    assert "(docs/architectures.md)" in block


def test_cli_page_lists_every_method() -> None:
    page = (DOCS / "cli.md").read_text()
    cell = re.search(r"<!-- methods:start -->(.*?)<!-- methods:end -->", page, re.S).group(1)
    assert re.findall(r"`(\w+)`", cell) == list(METHODS)


def test_the_generator_rejects_a_page_without_its_markers() -> None:
    with pytest.raises(ValueError, match="0 times"):
        generator().fill("no markers here", "methods", "x", page="docs/cli.md")
