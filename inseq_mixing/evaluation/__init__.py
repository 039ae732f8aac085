"""Faithfulness evaluation of every measure over a corpus: deletion (comprehensiveness, sufficiency) and its soft
variants, AOPC tables and curves, in one process or sharded over many with results streamed to Parquet."""

from __future__ import annotations

from .api import evaluate
from .faithfulness import DEFAULT_BINS, METRICS
from .result import EvaluationResult
from .scores import scorable_methods

__all__ = ["DEFAULT_BINS", "METRICS", "EvaluationResult", "evaluate", "scorable_methods"]
