"""Matplotlib figures of context-mixing matrices (install the ``plot`` extra)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from jaxtyping import Float
from torch import Tensor


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("Plotting needs matplotlib: pip install 'inseq-mixing[plot]'.") from error
    return plt


def plot_layers(
    mixing: Float[Tensor, "layer query key"],
    tokens: Sequence[str],
    path: str | Path,
    *,
    column_tokens: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """Save one heatmap per layer (row = receiving token, column = contributing token) to ``path``.

    Args:
        mixing: Per-layer matrices of one sequence.
        tokens: The token strings labelling the rows (and the columns, unless ``column_tokens`` is given).
        column_tokens: Labels of the columns when they differ from the rows (encoder-decoders: source + target).
        path: Output image file (the format follows the suffix, e.g. ``.png`` or ``.pdf``).
        title: Figure title.

    Returns:
        The path written.
    """
    plt = _pyplot()
    column_tokens = tokens if column_tokens is None else column_tokens
    n_layers, n_rows, n_cols = mixing.shape
    if (len(tokens), len(column_tokens)) != (n_rows, n_cols):
        raise ValueError(f"Got {len(tokens)}×{len(column_tokens)} token labels for a {n_rows}×{n_cols} matrix.")
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
        image = ax.imshow(data[idx], cmap="Blues", vmin=0, vmax=max(float(data[idx].max()), 1e-12))
        ax.set_title(f"layer {idx + 1}")
        ax.set_xticks(range(n_cols), column_tokens, rotation=90, fontsize=8)
        ax.set_yticks(range(n_rows), tokens, fontsize=8)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _heatmap(ax, matrix, rows: Sequence[str], columns: Sequence[str], title: str):
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=max(float(matrix.max()), 1e-12))
    ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    ax.set_xlabel("contributing token")
    ax.set_ylabel("receiving token")
    ax.set_title(title)
    return image


def plot_rollout(
    rollout: Float[Tensor, "query key"], tokens: Sequence[str], path: str | Path, *, title: str = "rollout"
) -> Path:
    """Save one heatmap of a rollout (e.g. the rollout through the last layer: ``mixing[0, -1]``)."""
    plt = _pyplot()
    n = len(tokens)
    if tuple(rollout.shape) != (n, n):
        raise ValueError(f"Got {n} token labels for a {tuple(rollout.shape)} matrix.")
    size = max(4.0, 0.4 * n + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size), layout="constrained")
    image = _heatmap(ax, rollout.detach().float().cpu().numpy(), tokens, tokens, title)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, path)


def plot_contributions(
    contributions: Float[Tensor, " key"],
    tokens: Sequence[str],
    path: str | Path,
    *,
    receiver: str = "",
    title: str = "",
) -> Path:
    """Save a bar chart of how much each token contributes to one receiving token (one row of a matrix)."""
    plt = _pyplot()
    if len(tokens) != contributions.shape[-1]:
        raise ValueError(f"Got {len(tokens)} token labels for {contributions.shape[-1]} contributions.")
    values = contributions.detach().float().cpu().numpy()
    fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(tokens) + 1.5), 3.5), layout="constrained")
    ax.bar(range(len(tokens)), values, color="#3b75af")
    ax.set_xticks(range(len(tokens)), tokens, rotation=90, fontsize=8)
    ax.set_ylabel("contribution")
    ax.set_title(title or (f"contributions to {receiver!r}" if receiver else "contributions"))
    return _save(fig, path)


def plot_source_target(
    combined: Float[Tensor, "target source_target"],
    source_tokens: Sequence[str],
    target_tokens: Sequence[str],
    path: str | Path,
    *,
    title: str = "",
) -> Path:
    """Save an encoder-decoder map: each target token's contributions from the source (left) and the target (right).

    ``combined`` is one layer of :attr:`EncoderDecoderMixing.combined` (e.g. ``mixing.combined[0, -1]``).
    """
    plt = _pyplot()
    n_source, n_target = len(source_tokens), len(target_tokens)
    if tuple(combined.shape) != (n_target, n_source + n_target):
        raise ValueError(f"Expected a {n_target}×{n_source + n_target} matrix; got {tuple(combined.shape)}.")
    data = combined.detach().float().cpu().numpy()
    height = max(3.0, 0.4 * n_target + 2)
    fig, (left, right) = plt.subplots(
        1, 2, figsize=(max(4.0, 0.4 * n_source + 2) + max(4.0, 0.4 * n_target + 2), height),
        gridspec_kw={"width_ratios": [max(n_source, 1), max(n_target, 1)]}, layout="constrained",
    )  # fmt: skip
    _heatmap(left, data[:, :n_source], target_tokens, source_tokens, "from the source")
    image = _heatmap(right, data[:, n_source:], target_tokens, target_tokens, "from the target prefix")
    fig.colorbar(image, ax=[left, right], fraction=0.03, pad=0.04)
    if title:
        fig.suptitle(title)
    return _save(fig, path)
