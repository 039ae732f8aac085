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
    fig, axes = plt.subplots(grid_rows, grid_cols, figsize=(width * grid_cols, height * grid_rows), squeeze=False)
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
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
