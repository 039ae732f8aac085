"""The corpus commands of `inseq-mixing`: `evaluate` (faithfulness of every measure) and `attribute-corpus` (token
scores of every example), sharded over processes, streamed to Parquet, resumable.

Example:
    torchrun --nproc_per_node 4 -m inseq_mixing.cli evaluate --model path/to/classifier --data reviews.csv \\
        --method decompx,alti,attention_rollout,random --output runs/faithfulness --plot curves.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .errors import UsageError


def _fractions(value: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"expected comma-separated fractions, e.g. 0.01,0.1; got {value!r}") from error


def _common(command: Any) -> None:
    command.add_argument("--model", required=True, help="Local directory of an encoder classifier or a causal LM.")
    command.add_argument("--data", required=True, type=Path, help="A local json/jsonl/csv/parquet/txt file.")
    command.add_argument("--method", required=True, help="Comma-separated methods with token scores (or 'random').")
    command.add_argument("--output", required=True, type=Path, help="Directory of the Parquet parts (resumable).")
    command.add_argument("--text-column", default="text", help="The dataset's column of texts (default: text).")
    command.add_argument("--batch-size", type=int, default=8, help="Examples computed together (default: 8).")
    command.add_argument("--flush-every", type=int, default=64, help="Examples per Parquet part (default: 64).")
    command.add_argument("--max-examples", type=int, help="Only the first examples of the dataset.")
    command.add_argument("--max-length", type=int, help="Truncate texts to this many tokens.")
    command.add_argument("--device", help="cpu, cuda, cuda:1... (default: this rank's GPU if any, else cpu).")
    command.add_argument("--option", action="append", default=[], metavar="METHOD.NAME=VALUE",
                         help="A method's option, e.g. hta.samples=8 (repeatable; values parsed as JSON).")  # fmt: skip
    command.add_argument("--no-progress", action="store_true", help="No progress bars.")


def add_corpus_parsers(commands: Any) -> None:
    """The ``evaluate`` and ``attribute-corpus`` subcommands' arguments."""
    evaluate = commands.add_parser("evaluate", help="Faithfulness (AOPC) of measures on a dataset, on N processes.")
    _common(evaluate)
    evaluate.add_argument("--metric", default="comprehensiveness,sufficiency,soft_comprehensiveness,soft_sufficiency",
                          help="Comma-separated metrics (default: all four).")  # fmt: skip
    evaluate.add_argument("--bins", type=_fractions, default=(0.01, 0.05, 0.1, 0.2, 0.5),
                          help="Comma-separated fractions of tokens deleted (default: 0.01,...,0.5).")  # fmt: skip
    evaluate.add_argument("--deletion", default="auto", help="auto, mask, remove, or a replacement token id.")
    evaluate.add_argument("--plot", type=Path, help="Save the comprehensiveness/sufficiency curves to this image.")
    attribute = commands.add_parser("attribute-corpus", help="Token scores of every example, streamed to Parquet.")
    _common(attribute)


def run_corpus(args: argparse.Namespace) -> int:
    """Run this process's shard, then (rank 0) merge: the evaluate table and curves, or a count of rows."""
    from .evaluation.corpus import barrier, distributed, read_rows, run_shard
    from .evaluation.data import load_model, load_texts, require_evaluation_packages
    from .evaluation.runner import attribute_texts, evaluate_texts, make_task

    if args.batch_size < 1 or args.flush_every < 1:
        raise UsageError("--batch-size and --flush-every must be at least 1.")
    require_evaluation_packages()
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    evaluating = args.command == "evaluate"
    deletion = _deletion(args.deletion) if evaluating else "auto"
    with distributed(args.device) as shard:
        _quiet_libraries()
        model, tokenizer = load_model(args.model, device=shard.device)
        options = {"metric": [m.strip() for m in args.metric.split(",")], "bins": args.bins} if evaluating else {}
        task = make_task(model, tokenizer, methods, deletion=deletion, max_length=args.max_length,
                         method_options=_method_options(args.option), **options)  # fmt: skip
        data = load_texts(args.data, args.text_column)
        n = len(data) if args.max_examples is None else min(len(data), args.max_examples)
        texts = data[:n][args.text_column]
        if evaluating:

            def job(batch: list[str], indices: list[int]) -> list[dict[str, Any]]:
                return evaluate_texts(task, batch, indices)
        else:
            extra = [c for c in data.column_names if c != args.text_column]

            def job(batch: list[str], indices: list[int]) -> list[dict[str, Any]]:
                rows = attribute_texts(task, batch, indices)
                for row in rows:
                    row["text"] = texts[row["example"]]
                    row["metadata"] = json.dumps({c: data[row["example"]][c] for c in extra}, default=str)
                return rows

        run_shard(job, texts, task.methods, args.output, shard, batch_size=args.batch_size,
                  flush_every=args.flush_every, progress=not args.no_progress)  # fmt: skip
        barrier(shard)
        if shard.is_main:
            _report(args, read_rows(args.output), evaluating)
    return 0


def _report(args: argparse.Namespace, rows: Any, evaluating: bool) -> None:
    from rich.console import Console

    console = Console()
    if not evaluating:
        console.print(f"{len(rows)} rows ({rows['example'].nunique()} examples × {rows['method'].nunique()} methods) "
                      f"under {args.output}")  # fmt: skip
        return
    from .evaluation import EvaluationResult

    result = EvaluationResult.from_rows(rows.drop(columns=[c for c in rows.columns if c not in _ROW_COLUMNS]))
    console.print(f"Faithfulness (AOPC, mean ± std over examples) — {Path(args.model).name}", highlight=False)
    print(result.table())  # plain text: not wrapped to the terminal's width
    result.to_pandas().to_csv(args.output / "summary.csv")
    console.print(f"Table written to {args.output / 'summary.csv'}")
    if args.plot is not None:
        console.print(f"Curves written to {result.plot(args.plot, title=Path(args.model).name)}")


_ROW_COLUMNS = ("example", "method", "metric", "bin", "value", "target", "probability")


def _method_options(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["hta.samples=8"]`` as ``{"hta": {"samples": 8}}``."""
    options: dict[str, dict[str, Any]] = {}
    for item in items:
        name, _, value = item.partition("=")
        method, _, key = name.partition(".")
        if not (method and key and _):
            raise UsageError(f"--option expects METHOD.NAME=VALUE, e.g. hta.samples=8; got {item!r}.")
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        options.setdefault(method.strip(), {})[key.strip()] = parsed
    return options


def _deletion(value: str) -> str | int:
    return int(value) if value.isdigit() else value


def _quiet_libraries() -> None:
    import datasets
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    datasets.disable_progress_bars()
