"""``inseq-mixing explain``: each token's contribution to a causal LM's next-token logit or a classifier's label.

Example:
    inseq-mixing explain --model path/to/gpt2 --method alti_logit --text "the keys to the cabinet" --foil is
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .measures import PREDICTION_METHODS


def add_explain_parser(commands: Any, digits: Any) -> None:
    """The ``explain`` subcommand's arguments."""
    explain = commands.add_parser("explain", help="Explain a prediction: each token's contribution to a logit.")
    explain.add_argument("--model", required=True, help="Local directory of a causal LM or a sequence classifier.")
    explain.add_argument("--method", required=True, choices=PREDICTION_METHODS, help="How the logit is decomposed.")
    explain.add_argument("--text", required=True, help="The input text.")
    explain.add_argument("--target", help="Causal LMs: the next token explained; classifiers: a label name or index "
                         "(default: the model's prediction).")  # fmt: skip
    explain.add_argument("--foil", help="Explain logit(target) − logit(foil) instead (a token or a label).")
    explain.add_argument("--plot", type=Path, help="Save a signed bar chart (and per-layer heatmap) to this file.")
    explain.add_argument("--digits", type=digits, default=3, help="Decimals shown in the table.")


def _output_id(value: str | None, tokenizer: Any, config: Any, is_classifier: bool, flag: str) -> int | None:
    """A ``--target``/``--foil`` value as a token id (causal LMs) or a class index (classifiers)."""
    from .errors import UsageError

    if value is None:
        return None
    if is_classifier:
        labels = dict(getattr(config, "label2id", {}) or {})
        if value in labels:
            return int(labels[value])
        if value.isdigit() and int(value) < config.num_labels:
            return int(value)
        raise UsageError(f"{flag} {value!r} is not a label of this classifier; labels: {', '.join(labels)}.")
    ids = tokenizer(value, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        ids_spaced = tokenizer(" " + value, add_special_tokens=False)["input_ids"]
        ids = ids_spaced if len(ids_spaced) == 1 else ids
    if len(ids) != 1:
        raise UsageError(f"{flag} {value!r} is {len(ids)} tokens for this tokenizer; pass a single token.")
    return int(ids[0])


def run_explain(args: argparse.Namespace) -> int:
    """Load the model with its head, explain the prediction, print the table and optionally plot."""
    from rich.console import Console
    from rich.table import Table
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    from .cli import _non_empty, _not_a_directory
    from .errors import UsageError
    from .prediction import attribute_prediction

    _non_empty("--text", args.text)
    path = Path(args.model).expanduser()
    if not path.is_dir() or not (path / "config.json").is_file():
        raise UsageError(_not_a_directory(args.model, "--model") if not path.is_dir() else
                         f"model directory {args.model!r} has no config.json.")  # fmt: skip
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    architectures = getattr(config, "architectures", None) or []
    is_classifier = any(name.endswith("ForSequenceClassification") for name in architectures)
    transformers_logging.disable_progress_bar()
    loader = AutoModelForSequenceClassification if is_classifier else AutoModelForCausalLM
    try:
        model = loader.from_pretrained(path, local_files_only=True)
    except ValueError as error:
        raise UsageError(f"{args.model!r} is neither a causal LM nor a sequence classifier ({error}).") from error
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    ids = tokenizer(args.text, return_tensors="pt", verbose=False)["input_ids"]
    target = _output_id(args.target, tokenizer, config, is_classifier, "--target")
    foil = _output_id(args.foil, tokenizer, config, is_classifier, "--foil")
    out = attribute_prediction(model, ids, args.method, target=target, foil=foil)
    tokens = tokenizer.convert_ids_to_tokens(ids[0].tolist())
    name = lambda i: config.id2label.get(i, str(i)) if is_classifier else tokenizer.convert_ids_to_tokens(i)  # noqa: E731
    explained = f"logit({name(int(out.target[0]))})" + (
        f" − logit({name(int(out.foil[0]))})" if foil is not None else ""
    )
    digits = args.digits
    table = Table(title=f"{args.method}: each token's contribution to {explained} — {type(model).__name__}")
    table.add_column("token", style="bold")
    table.add_column("contribution", justify="right")
    for token, score in zip(tokens, out.scores[0].tolist(), strict=True):
        table.add_row(token, f"[{'green' if score >= 0 else 'red'}]{score:+.{digits}f}[/]")
    rest = {key: float(value[0]) for key, value in out.rest.items()}
    if rest:
        table.add_section()
        table.add_row("rest (not a token)", f"{sum(rest.values()):+.{digits}f}")
        for key, value in rest.items():
            table.add_row(f"  {key}", f"{value:+.{digits}f}")
    table.add_section()
    table.add_row(explained, f"{float(out.value[0]):+.{digits}f}")
    table.add_row("identity residual", f"{float(out.identity_error()[0]):+.1e}")
    console = Console()
    console.print(table)
    if args.plot is not None:
        from .plot import plot_prediction

        written = plot_prediction(out, tokens, args.plot, title=f"{args.method}: {explained}")
        console.print(f"Contributions plotted to {written}")
    return 0
