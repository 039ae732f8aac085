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
    title: str = "",
) -> Path:
    """Save one heatmap per layer (row = receiving token, column = contributing token) to ``path``.

    Args:
        mixing: Per-layer matrices of one sequence.
        tokens: The token strings labelling rows and columns.
        path: Output image file (the format follows the suffix, e.g. ``.png`` or ``.pdf``).
        title: Figure title.

    Returns:
        The path written.
    """
    plt = _pyplot()
    n_layers, n = mixing.shape[0], mixing.shape[-1]
    if len(tokens) != n:
        raise ValueError(f"Got {len(tokens)} token labels for a {n}×{n} matrix.")
    cols = min(n_layers, 4)
    rows = math.ceil(n_layers / cols)
    size = max(3.0, 0.35 * n + 1.5)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    data = mixing.detach().float().cpu().numpy()
    for idx, ax in enumerate(axes.flat):
        if idx >= n_layers:
            ax.axis("off")
            continue
        image = ax.imshow(data[idx], cmap="Blues", vmin=0, vmax=max(float(data[idx].max()), 1e-12))
        ax.set_title(f"layer {idx + 1}")
        ax.set_xticks(range(n), tokens, rotation=90, fontsize=8)
        ax.set_yticks(range(n), tokens, fontsize=8)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
