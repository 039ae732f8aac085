"""The faithfulness curves: comprehensiveness and sufficiency against the fraction of tokens deleted, per method."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..plot import _pyplot, _save

if TYPE_CHECKING:
    import pandas as pd

PANELS = (("comprehensiveness", "comprehensiveness ↑ (top tokens deleted)"),
          ("sufficiency", "sufficiency ↓ (only the top tokens kept)"))  # fmt: skip


def plot_faithfulness(curves: pd.DataFrame, path: str | Path, *, title: str = "") -> Path:
    """Save one panel per binned metric: the mean over examples per bin (± one standard error shaded), one
    line per method (``curves`` as :meth:`EvaluationResult.curves` returns it).

    Returns:
        The path written.

    Raises:
        ValueError: If ``curves`` holds no binned metric (only the soft ones were evaluated).
    """
    panels = [(metric, label) for metric, label in PANELS if metric in set(curves["metric"])]
    if not panels:
        raise ValueError("No comprehensiveness or sufficiency curves to plot: evaluate a binned metric.")
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.8), squeeze=False)
    for ax, (metric, label) in zip(axes[0], panels, strict=True):
        for method, group in curves[curves["metric"] == metric].groupby("method", sort=False):
            x = group["bin"].to_numpy() * 100
            mean, sem = group["mean"].to_numpy(), group["sem"].fillna(0).to_numpy()
            (line,) = ax.plot(x, mean, marker="o", label=method)
            ax.fill_between(x, mean - sem, mean + sem, color=line.get_color(), alpha=0.12, linewidth=0)
        ax.set_xscale("log")
        ax.set_xticks(x, [f"{v:g}%" for v in x])
        ax.minorticks_off()
        ax.set_xlabel("tokens deleted (% of deletable)")
        ax.set_ylabel("p(y|x) − p(y|perturbed)")
        ax.set_title(label, fontsize=10)
        ax.axhline(0, color="grey", linewidth=0.6)
    axes[0][-1].legend(fontsize=8, loc="best")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)
