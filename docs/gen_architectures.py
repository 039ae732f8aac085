"""Write docs/architectures.md from the adapter table: ``python docs/gen_architectures.py``."""

from pathlib import Path

from inseq_mixing.extract import ADAPTERS
from inseq_mixing.extract.describe import architectures_markdown

if __name__ == "__main__":
    target = Path(__file__).with_name("architectures.md")
    target.write_text(architectures_markdown(ADAPTERS))
    print(f"wrote {target}")
