"""Write every generated part of the docs from the code's tables: ``python docs/gen_architectures.py``.

- ``docs/architectures.md``, whole, from :data:`inseq_mixing.extract.ADAPTERS`;
- ``README.md``, between ``<!-- architectures:start -->`` and ``<!-- architectures:end -->``: how many model types
  are supported, which, and a link to the architectures page;
- ``docs/cli.md``, between ``<!-- methods:start -->`` and ``<!-- methods:end -->``: the ``--method`` names, from
  :data:`inseq_mixing.mixing.METHODS`.

``tests/test_docs.py`` fails when a file differs from what this script would write.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

from inseq_mixing.describe import architectures_markdown
from inseq_mixing.extract import ADAPTERS, Adapter, AdapterChoice, EncoderDecoderAdapter
from inseq_mixing.mixing import METHODS

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("encoder", "decoder", "encoder-decoder")


def kind_of(adapter: Adapter | EncoderDecoderAdapter | AdapterChoice) -> str:
    """``"encoder"``, ``"decoder"`` or ``"encoder-decoder"`` (a config-selected choice takes its variants' kind)."""
    if isinstance(adapter, AdapterChoice):
        kinds = {kind_of(variant) for _, variant in adapter.variants}
        if len(kinds) != 1:
            raise ValueError(f"An AdapterChoice mixes kinds {sorted(kinds)}; give each kind its own model type.")
        return kinds.pop()
    if isinstance(adapter, EncoderDecoderAdapter):
        return "encoder-decoder"
    return "decoder" if adapter.is_causal else "encoder"


def _code_list(names: Sequence[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


def readme_architectures(adapters: Mapping[str, Adapter | EncoderDecoderAdapter | AdapterChoice]) -> str:
    """The README's paragraph naming every supported ``config.model_type``, grouped by kind (on lines of its own)."""
    by_kind = {kind: sorted(t for t, adapter in adapters.items() if kind_of(adapter) == kind) for kind in KINDS}
    text = (
        f"Supported architectures: {len(adapters)} `config.model_type`s, listed with their block form, norm and notes "
        f"in [docs/architectures.md](docs/architectures.md). Encoders: {_code_list(by_kind['encoder'])}. "
        f"Decoders: {_code_list(by_kind['decoder'])}. Encoder-decoders (encoder, decoder self- and cross-attention, "
        f"with ALTI+'s source/target rollout): {_code_list(by_kind['encoder-decoder'])}. Any other model raises "
        "`UnsupportedArchitectureError` naming the supported types."
    )
    return "\n" + textwrap.fill(text, width=120, break_long_words=False, break_on_hyphens=False) + "\n"


def cli_methods(methods: Sequence[str]) -> str:
    """The ``--method`` cell of the CLI page: every method name, in the table's order."""
    return _code_list(methods)


def fill(text: str, marker: str, content: str, *, page: str) -> str:
    """Replace what lies between ``<!-- marker:start -->`` and ``<!-- marker:end -->`` in ``text`` by ``content``.

    Raises:
        ValueError: If ``text`` does not hold the pair of markers exactly once.
    """
    pattern = re.compile(rf"(<!-- {marker}:start -->)(.*?)(<!-- {marker}:end -->)", re.S)
    found = len(pattern.findall(text))
    if found != 1:
        raise ValueError(
            f"{page} holds the '<!-- {marker}:start -->' ... '<!-- {marker}:end -->' pair {found} times; "
            "put it exactly once where the generated text goes."
        )
    return pattern.sub(lambda match: f"{match.group(1)}{content}{match.group(3)}", text)


def generated() -> dict[Path, str]:
    """Every generated file's full expected text, keyed by path (read from disk for partly generated pages)."""
    readme, cli = ROOT / "README.md", ROOT / "docs" / "cli.md"
    return {
        ROOT / "docs" / "architectures.md": architectures_markdown(ADAPTERS),
        readme: fill(readme.read_text(), "architectures", readme_architectures(ADAPTERS), page="README.md"),
        cli: fill(cli.read_text(), "methods", cli_methods(METHODS), page="docs/cli.md"),
    }


if __name__ == "__main__":
    for path, text in generated().items():
        if path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
        else:
            print(f"unchanged {path.relative_to(ROOT)}")
