"""The result of a faithfulness evaluation: per-example rows, the AOPC table (mean ± std per method) and the curves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .faithfulness import BINNED

if TYPE_CHECKING:
    import pandas as pd

HIGHER_IS_BETTER = {"comprehensiveness": True, "sufficiency": False, "soft_comprehensiveness": True,
                    "soft_sufficiency": False}  # fmt: skip
"""Which direction is more faithful, per metric (the table marks each column with ↑ or ↓)."""


@dataclass(frozen=True)
class EvaluationResult:
    """Faithfulness of each method, per example and aggregated.

    Attributes:
        rows: One row per (example, method, metric, bin): columns ``example``, ``method``, ``metric``, ``bin``
            (``NaN`` for the soft metrics), ``value``, ``target``, ``probability`` (of the target on the full input).
    """

    rows: pd.DataFrame

    @classmethod
    def from_rows(cls, rows: Sequence[dict[str, Any]] | pd.DataFrame) -> EvaluationResult:
        """Build from result rows (a list of dicts or a DataFrame), sorted by example, method, metric and bin."""
        import pandas as pd

        frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        frame = frame.astype({"bin": "float64"}).sort_values(["example", "method", "metric", "bin"])
        return cls(rows=frame.reset_index(drop=True))

    @property
    def methods(self) -> list[str]:
        """The methods, in the order they were evaluated."""
        return list(dict.fromkeys(self.rows["method"]))

    @property
    def metrics(self) -> list[str]:
        """The metrics present."""
        return [m for m in HIGHER_IS_BETTER if m in set(self.rows["metric"])]

    def aopc(self) -> pd.DataFrame:
        """Each example's AOPC per method and metric (the mean over bins; the soft metrics' single value)."""
        return self.rows.groupby(["example", "method", "metric"], sort=False)["value"].mean().reset_index(name="aopc")

    def to_pandas(self) -> pd.DataFrame:
        """The table: one row per method, columns ``(metric, "mean" | "std")`` of the per-example AOPC, and
        ``("n", "examples")``."""
        per_example = self.aopc()
        table = per_example.pivot_table(index="method", columns="metric", values="aopc", aggfunc=["mean", "std"])
        table = table.swaplevel(0, 1, axis=1).reindex(columns=[(m, s) for m in self.metrics for s in ("mean", "std")])
        table[("n", "examples")] = per_example.groupby("method")["example"].nunique()
        return table.reindex(self.methods)

    def curves(self) -> pd.DataFrame:
        """Mean, standard deviation and standard error of the mean over examples, per method, binned metric and
        bin."""
        binned = self.rows[self.rows["metric"].isin(BINNED)]
        curves = binned.groupby(["method", "metric", "bin"], sort=False)["value"].agg(["mean", "std", "count"])
        curves["sem"] = curves["std"] / curves["count"].pow(0.5)
        return curves.reset_index()

    def table(self, digits: int = 3) -> str:
        """The AOPC table as text: ``mean ± std`` per method (rows) and metric (columns, ↑/↓: more faithful)."""
        frame = self.to_pandas()
        header = ["method", *(f"{m} {'↑' if HIGHER_IS_BETTER[m] else '↓'}" for m in self.metrics), "n"]
        lines = [header]
        for method, row in frame.iterrows():
            cells = [f"{row[(m, 'mean')]:.{digits}f} ± {_std(row[(m, 'std')], digits)}" for m in self.metrics]
            lines.append([str(method), *cells, str(int(row[("n", "examples")]))])
        widths = [max(len(line[k]) for line in lines) for k in range(len(header))]
        text = [" | ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)) for line in lines]
        text.insert(1, "-+-".join("-" * w for w in widths))
        return "\n".join(text)

    def __str__(self) -> str:
        return self.table()

    def plot(self, path: str | Path, *, title: str = "") -> Path:
        """Save the comprehensiveness and sufficiency curves (mean over examples, ± one standard error shaded)."""
        from .plot import plot_faithfulness

        return plot_faithfulness(self.curves(), path, title=title)


def _std(value: float, digits: int) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"  # NaN with a single example
