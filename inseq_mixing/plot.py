"""Matplotlib figures of context-mixing matrices (install the ``plot`` extra).

Every public function builds its figure in a private ``_*_figure`` helper (which returns the matplotlib ``Figure``),
then saves it and returns the path. Colour scales start at 0; panels drawn side by side for one matrix (source and
target columns of an encoder-decoder map) share one scale and one colour bar, so equal colours mean equal values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from jaxtyping import Float
from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.image import AxesImage

    from .prediction import PredictionAttribution

DIVIDER_GID = "column-divider"
"""The ``gid`` of the vertical lines that separate column groups (e.g. source | target)."""

_TINY = 1e-12  # the top of a colour scale when every value is 0


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("Plotting needs matplotlib: pip install 'inseq-mixing[plot]'.") from error
    return plt


def _save(fig: Figure, path: str | Path) -> Path:
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.savefig(path, dpi=120)
    finally:
        plt.close(fig)
    return path


def _heatmap(
    ax: Axes, matrix, rows: Sequence[str], columns: Sequence[str], title: str, *, norm: Normalize | None = None
) -> AxesImage:
    """Draw ``matrix`` on ``ax`` with a 0-based colour scale (``norm`` when shared with other panels)."""
    if norm is None:
        image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(float(matrix.max()), _TINY))
    else:
        image = ax.imshow(matrix, cmap="Blues", norm=norm)
    ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_title(title)
    return image


def _divide(ax: Axes, column: int) -> None:
    """Draw a vertical divider on ``ax`` just before column index ``column``."""
    ax.axvline(column - 0.5, color="black", linewidth=2.5, clip_on=False, gid=DIVIDER_GID)


def _check_divider(column_divider: int | None, n_cols: int) -> None:
    if column_divider is not None and not 0 < column_divider < n_cols:
        raise ValueError(
            f"column_divider={column_divider} is outside the matrix's {n_cols} columns; pass an index from 1 to "
            f"{n_cols - 1} (the first column after the divider) or None."
        )


def _check_labels(tokens: Sequence[str], column_tokens: Sequence[str] | None, n_rows: int, n_cols: int,
                  column_divider: int | None) -> Sequence[str]:  # fmt: skip
    """The column labels (the row labels unless given), checked against the matrix and the divider."""
    column_tokens = tokens if column_tokens is None else column_tokens
    if (len(tokens), len(column_tokens)) != (n_rows, n_cols):
        raise ValueError(
            f"Got {len(tokens)}×{len(column_tokens)} token labels for a {n_rows}×{n_cols} matrix; pass one label "
            "per row (tokens) and per column (column_tokens)."
        )
    _check_divider(column_divider, n_cols)
    return column_tokens


def _layers_figure(
    mixing: Float[Tensor, "layer query key"],
    tokens: Sequence[str],
    *,
    column_tokens: Sequence[str] | None = None,
    title: str = "",
    column_divider: int | None = None,
) -> Figure:
    plt = _pyplot()
    n_layers, n_rows, n_cols = mixing.shape
    column_tokens = _check_labels(tokens, column_tokens, n_rows, n_cols, column_divider)
    grid_cols = min(n_layers, 4)
    grid_rows = math.ceil(n_layers / grid_cols)
    width, height = max(3.0, 0.35 * n_cols + 1.5), max(3.0, 0.35 * n_rows + 1.5)
    fig, axes = plt.subplots(
        grid_rows, grid_cols, figsize=(width * grid_cols, height * grid_rows), squeeze=False, layout="constrained"
    )
    data = mixing.detach().float().cpu().numpy()
    for idx, ax in enumerate(axes.flat):
        if idx >= n_layers:
            ax.axis("off")
            continue
        image = _heatmap(ax, data[idx], tokens, column_tokens, f"layer {idx + 1}")
        if column_divider is not None:
            _divide(ax, column_divider)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)  # this panel's own scale, drawn beside it
    if title:
        fig.suptitle(title)
    return fig


def plot_layers(
    mixing: Float[Tensor, "layer query key"],
    tokens: Sequence[str],
    path: str | Path,
    *,
    column_tokens: Sequence[str] | None = None,
    title: str = "",
    column_divider: int | None = None,
) -> Path:
    """Save one heatmap per layer (row = receiving token, column = contributing token) to ``path``.

    Each layer's panel has its own colour scale, from 0 to that layer's maximum, and its own colour bar.

    Args:
        mixing: Per-layer matrices of one sequence.
        tokens: The token strings labelling the rows (and the columns, unless ``column_tokens`` is given).
        path: Output image file (the format follows the suffix, e.g. ``.png`` or ``.pdf``).
        column_tokens: Labels of the columns when they differ from the rows (encoder-decoders: source + target).
        title: Figure title.
        column_divider: Draw a vertical line on every panel before this column index, e.g. the number of source
            tokens to separate the source and target columns of an encoder-decoder map.

    Returns:
        The path written.

    Raises:
        ValueError: If the labels do not match the matrix or ``column_divider`` is not inside it.
    """
    figure = _layers_figure(mixing, tokens, column_tokens=column_tokens, title=title, column_divider=column_divider)
    return _save(figure, path)


def _methods_figure(
    panels: Sequence[tuple[str, Float[Tensor, "layer query key"]]],
    tokens: Sequence[str],
    *,
    column_tokens: Sequence[str] | None = None,
    title: str = "",
    column_divider: int | None = None,
    layer_numbers: Sequence[int] | None = None,
) -> Figure:
    plt = _pyplot()
    if not panels:
        raise ValueError("Pass at least one (method, matrices) pair.")
    shapes = {tuple(matrices.shape) for _, matrices in panels}
    if len(shapes) != 1:
        raise ValueError(f"Every method's matrices must have one shape to share the grid; got {sorted(shapes)}.")
    n_layers, n_rows, n_cols = next(iter(shapes))
    column_tokens = _check_labels(tokens, column_tokens, n_rows, n_cols, column_divider)
    width, height = max(3.0, 0.35 * n_cols + 1.5), max(3.0, 0.35 * n_rows + 1.5)
    fig, axes = plt.subplots(
        len(panels), n_layers, figsize=(width * n_layers, height * len(panels)), squeeze=False, layout="constrained"
    )
    for row, (method, matrices) in enumerate(panels):
        data = matrices.detach().float().cpu().numpy()
        for layer in range(n_layers):
            ax = axes[row, layer]
            number = layer + 1 if layer_numbers is None else layer_numbers[layer]
            image = _heatmap(ax, data[layer], tokens, column_tokens, f"{method}, layer {number}")
            if column_divider is not None:
                _divide(ax, column_divider)
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title)
    return fig


def plot_methods(
    panels: Sequence[tuple[str, Float[Tensor, "layer query key"]]],
    tokens: Sequence[str],
    path: str | Path,
    *,
    column_tokens: Sequence[str] | None = None,
    title: str = "",
    column_divider: int | None = None,
    layer_numbers: Sequence[int] | None = None,
) -> Path:
    """Save several methods' matrices side by side: one row per method, one column per layer.

    Each panel has its own colour scale from 0 and its own colour bar (methods measure different quantities).

    Args:
        panels: ``(method name, [layer, query, key] matrices)`` pairs of one sequence, all of one shape.
        tokens: Row labels (and column labels unless ``column_tokens`` is given).
        path: Output image file.
        column_tokens: Column labels when they differ from the rows.
        title: Figure title.
        column_divider: A vertical line before this column on every panel (source | target).
        layer_numbers: The 1-based layer number of each column (default 1, 2, ...), for a selection of layers.

    Returns:
        The path written.
    """
    figure = _methods_figure(panels, tokens, column_tokens=column_tokens, title=title, column_divider=column_divider,
                             layer_numbers=layer_numbers)  # fmt: skip
    return _save(figure, path)


def _rollout_figure(rollout: Float[Tensor, "query key"], tokens: Sequence[str], *, title: str = "rollout") -> Figure:
    plt = _pyplot()
    n = len(tokens)
    if tuple(rollout.shape) != (n, n):
        raise ValueError(f"Got {n} token labels for a {tuple(rollout.shape)} matrix; pass one label per token.")
    size = max(4.0, 0.4 * n + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size), layout="constrained")
    image = _heatmap(ax, rollout.detach().float().cpu().numpy(), tokens, tokens, title)
    ax.set_xlabel("contributing token")
    ax.set_ylabel("receiving token")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return fig


def plot_rollout(
    rollout: Float[Tensor, "query key"], tokens: Sequence[str], path: str | Path, *, title: str = "rollout"
) -> Path:
    """Save one heatmap of a rollout (e.g. the rollout through the last layer: ``mixing[0, -1]``).

    Raises:
        ValueError: If the number of labels does not match the matrix.
    """
    return _save(_rollout_figure(rollout, tokens, title=title), path)


def _contributions_figure(
    contributions: Float[Tensor, " key"], tokens: Sequence[str], *, receiver: str = "", title: str = ""
) -> Figure:
    plt = _pyplot()
    if len(tokens) != contributions.shape[-1]:
        raise ValueError(
            f"Got {len(tokens)} token labels for {contributions.shape[-1]} contributions; pass one label per token."
        )
    values = contributions.detach().float().cpu().numpy()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(tokens) + 1.5), 3.5), layout="constrained")
    ax.bar(range(len(tokens)), values, color="#3b75af")
    ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=8)
    ax.set_ylabel("contribution")
    ax.set_title(title or (f"contributions to {receiver!r}" if receiver else "contributions"))
    return fig


def plot_contributions(
    contributions: Float[Tensor, " key"],
    tokens: Sequence[str],
    path: str | Path,
    *,
    receiver: str = "",
    title: str = "",
) -> Path:
    """Save a bar chart of how much each token contributes to one receiving token (one row of a matrix).

    Raises:
        ValueError: If the number of labels does not match the contributions.
    """
    return _save(_contributions_figure(contributions, tokens, receiver=receiver, title=title), path)


def _source_target_figure(
    combined: Float[Tensor, "target source_target"],
    source_tokens: Sequence[str],
    target_tokens: Sequence[str],
    *,
    title: str = "",
) -> Figure:
    plt = _pyplot()
    from matplotlib.colors import Normalize

    n_source, n_target = len(source_tokens), len(target_tokens)
    if tuple(combined.shape) != (n_target, n_source + n_target):
        raise ValueError(
            f"Expected a {n_target}×{n_source + n_target} matrix (target × source + target) for {n_source} source "
            f"and {n_target} target tokens; got {tuple(combined.shape)}. Pass one layer, e.g. mixing.combined[0, -1]."
        )
    data = combined.detach().float().cpu().numpy()
    norm = Normalize(vmin=0, vmax=max(float(data.max()), _TINY))  # one scale for both panels
    height = max(3.0, 0.4 * n_target + 2)
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(max(4.0, 0.4 * n_source + 2) + max(4.0, 0.4 * n_target + 2), height), sharey=True,
        gridspec_kw={"width_ratios": [max(n_source, 1), max(n_target, 1)]}, layout="constrained",
    )  # fmt: skip
    image = _heatmap(left, data[:, :n_source], target_tokens, source_tokens, "from the source", norm=norm)
    _heatmap(right, data[:, n_source:], target_tokens, target_tokens, "from the target prefix", norm=norm)
    left.set(xlabel="contributing source token", ylabel="receiving target token")
    right.set_xlabel("contributing target token")
    right.tick_params(labelleft=False)
    _divide(left, n_source)  # the source panel's right edge, facing the target panel
    colorbar = fig.colorbar(image, ax=[left, right], fraction=0.03, pad=0.04)
    colorbar.set_label("contribution (one scale for both panels)")
    if title:
        fig.suptitle(title)
    return fig


def plot_source_target(
    combined: Float[Tensor, "target source_target"],
    source_tokens: Sequence[str],
    target_tokens: Sequence[str],
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """Save an encoder-decoder map: each target token's contributions from the source (left) and the target (right).

    ``combined`` is one layer of :attr:`EncoderDecoderMixing.combined` (e.g. ``mixing.combined[0, -1]``), whose rows
    sum to 1 over source + target. Both panels share one colour scale (0 to the largest value of either) and one
    colour bar, with a divider between the source and target columns.

    Raises:
        ValueError: If the matrix is not ``target × (source + target)`` for the labels given.
    """
    return _save(_source_target_figure(combined, source_tokens, target_tokens, title=title), path)


def _prediction_figure(attribution: PredictionAttribution, tokens: Sequence[str], *, title: str = "") -> Figure:
    plt = _pyplot()
    scores = attribution.scores[0].detach().float().cpu().numpy()
    if len(tokens) != scores.shape[-1]:
        raise ValueError(f"Got {len(tokens)} token labels for {scores.shape[-1]} contributions.")
    per_layer = attribution.per_layer
    rows = 2 if per_layer is not None else 1
    width = max(4.0, 0.45 * len(tokens) + 1.5)
    fig, axes = plt.subplots(rows, 1, figsize=(width, 3.5 * rows), squeeze=False, layout="constrained")
    bars = axes[0, 0]
    bars.bar(range(len(tokens)), scores, color=["#2a9d4b" if value >= 0 else "#c0392b" for value in scores])
    bars.axhline(0, color="black", linewidth=0.8)
    bars.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=8)
    bars.set_ylabel("contribution to the logit")
    bars.set_title(title or attribution.method)
    if per_layer is not None:
        data = per_layer[0].detach().float().cpu().numpy()  # [layer, token]
        limit = max(float(abs(data).max()), _TINY)
        ax = axes[1, 0]
        image = ax.imshow(data, cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=8)
        ax.set_yticks(range(data.shape[0]), [f"layer {i + 1}" for i in range(data.shape[0])], fontsize=8)
        ax.set_title("entering through each layer (0 at the centre of the colour scale)")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return fig


def plot_prediction(
    attribution: PredictionAttribution, tokens: Sequence[str], path: str | Path, *, title: str = ""
) -> Path:
    """Save a signed bar chart of each token's contribution to an explained logit (green: for, red: against) and,
    where the method defines it (Logit, ALTI-Logit), a layer × token heatmap of what enters through each layer.

    Args:
        attribution: A :class:`~inseq_mixing.prediction.PredictionAttribution` (its first sequence is plotted).
        tokens: One label per input token.
        path: Output image file.
        title: Figure title (default: the method).

    Returns:
        The path written.
    """
    return _save(_prediction_figure(attribution, tokens, title=title), path)
