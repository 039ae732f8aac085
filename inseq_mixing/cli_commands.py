"""The `explain` and `routes` commands of `inseq-mixing` (explaining predictions, information-flow routes).

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
    what = "contribution" if out.decomposes else "relevance"
    table = Table(title=f"{args.method}: each token's {what} to {explained} — {type(model).__name__}")
    table.add_column("token", style="bold")
    table.add_column(what, justify="right")
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
    if out.decomposes:
        table.add_row("identity residual", f"{float(out.identity_error()[0]):+.1e}")
    console = Console()
    console.print(table)
    if args.plot is not None:
        from .plot import plot_prediction

        written = plot_prediction(out, tokens, args.plot, title=f"{args.method}: {explained}")
        console.print(f"Contributions plotted to {written}")
    return 0


def add_routes_parser(commands: Any) -> None:
    """The ``routes`` subcommand's arguments."""
    routes = commands.add_parser("routes", help="Information-flow routes to a prediction, as a graph.")
    routes.add_argument("--model", required=True, help="Local directory of a pre-LN or parallel decoder.")
    routes.add_argument("--text", required=True, help="The input text.")
    routes.add_argument("--position", type=int, default=-1, help="The position whose routes are drawn (-1: last).")
    routes.add_argument("--threshold", type=float, default=0.04, help="Parts at or below it are dropped (0.04).")
    routes.add_argument("--html", type=Path, help="Write a self-contained interactive page to this file.")
    routes.add_argument("--plot", type=Path, help="Save a layered figure to this image file.")
    routes.add_argument("--per-head", action="store_true", help="One attention edge per head.")


def run_routes(args: argparse.Namespace) -> int:
    """Compute the routes, print a summary of the strongest edges, and write the page and figure asked for."""
    from rich.console import Console
    from rich.table import Table
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    from .cli import _non_empty, _not_a_directory
    from .errors import UsageError
    from .information_flow import routes
    from .routes_plot import plot_routes, routes_html

    _non_empty("--text", args.text)
    path = Path(args.model).expanduser()
    if not path.is_dir() or not (path / "config.json").is_file():
        raise UsageError(_not_a_directory(args.model, "--model") if not path.is_dir() else
                         f"model directory {args.model!r} has no config.json.")  # fmt: skip
    if not 0 <= args.threshold < 1:
        raise UsageError(f"--threshold must be in [0, 1); got {args.threshold}.")
    AutoConfig.from_pretrained(path, local_files_only=True)
    transformers_logging.disable_progress_bar()
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    ids = tokenizer(args.text, return_tensors="pt", verbose=False)["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids[0].tolist())
    if not -len(tokens) <= args.position < len(tokens):
        raise UsageError(f"--position {args.position} is outside the text's {len(tokens)} tokens.")
    graph = routes(model, ids, position=args.position, threshold=args.threshold, per_head=args.per_head, tokens=tokens)
    target = tokens[args.position]
    size = f"{graph.number_of_nodes()} nodes, {graph.number_of_edges()} edges, threshold {args.threshold}"
    table = Table(title=f"routes to {target!r} (position {args.position % len(tokens)}): {size}")
    table.add_column("edge")
    table.add_column("weight", justify="right")
    strongest = sorted(graph.edges(data=True), key=lambda edge: -edge[2]["weight"])[:15]
    for u, v, data in strongest:
        table.add_row(f"{u} → {v}", f"{data['weight']:.3f}")
    console = Console()
    console.print(table)
    if args.html is not None:
        full = routes(model, ids, position=None, threshold=args.threshold, per_head=args.per_head, tokens=tokens)
        written = routes_html(full, args.html, title=f"information flow of {args.text!r}")
        console.print(f"Interactive page (the whole thresholded graph; click {target!r}'s node) written to {written}")
    if args.plot is not None:
        written = plot_routes(graph, args.plot, title=f"routes to {target!r}", tokens=tokens)
        console.print(f"Layered figure written to {written}")
    return 0
