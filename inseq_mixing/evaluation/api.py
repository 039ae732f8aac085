"""``inseq_mixing.evaluate``: rank measures by deletion faithfulness on a model and a dataset, in one process.

For a corpus over several processes, with results streamed to Parquet and resumable, use the ``inseq-mixing
evaluate`` command (:mod:`inseq_mixing.evaluation.corpus`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, no_type_check

from tqdm.auto import tqdm

from .data import load_model, load_texts, require_evaluation_packages
from .faithfulness import DEFAULT_BINS, METRICS, Deletion
from .result import EvaluationResult
from .runner import evaluate_texts, make_task


@no_type_check  # validates its own arguments (make_task): users get a message, not a type-check error
def evaluate(
    model: Any,
    dataset: Any,
    methods: Sequence[str],
    *,
    tokenizer: Any = None,
    text_column: str = "text",
    metric: Sequence[str] = METRICS,
    bins: Sequence[float] = DEFAULT_BINS,
    deletion: Deletion = "auto",
    batch_size: int = 8,
    max_examples: int | None = None,
    max_length: int | None = None,
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    progress: bool = True,
) -> EvaluationResult:
    """Deletion faithfulness (comprehensiveness, sufficiency and their soft variants, AOPC over ``bins``) of each
    method's token scores for the model's own predictions.

    Args:
        model: An encoder sequence classifier (explains the predicted label's probability) or a causal LM (the next
            token's probability after each text), loaded or as a local directory.
        dataset: A ``datasets.Dataset``, a list of strings, or a local json/jsonl/csv/parquet/txt file.
        methods: Names of methods with token scores: the prediction methods (``decompx``, ``alti_logit``,
            ``logit``, ``grad_rollout``), the context-mixing measures (the explained position's row of their
            rollout through the last layer) and ``"random"`` (a seeded chance baseline).
        tokenizer: Needed when ``model`` is a loaded module.
        text_column: The dataset's column of texts.
        metric: Which of :data:`~inseq_mixing.evaluation.METRICS` to compute.
        bins: Fractions of the deletable tokens deleted (at least one token per bin).
        deletion: ``"auto"`` (the mask token if the tokenizer has one, else removal), ``"mask"``, ``"remove"``, or
            a replacement token id.
        batch_size: Examples scored together (perturbed inputs: one forward per bin for the whole batch).
        max_examples: Evaluate only the first examples.
        max_length: Truncate texts to this many tokens.
        method_options: Per-method options, e.g. ``{"value_zeroing": {"similarity": "euclidean"}}``.
        progress: Show a progress bar.

    Returns:
        An :class:`~inseq_mixing.evaluation.EvaluationResult`: ``print`` it for the table, ``.to_pandas()`` for a
        DataFrame, ``.plot(path)`` for the curves.

    Example:
        >>> result = evaluate("path/to/classifier", "reviews.csv", ["decompx", "alti", "attention_rollout", "random"])
        >>> print(result)
    """
    require_evaluation_packages()
    model, tokenizer = load_model(model, tokenizer)
    task = make_task(model, tokenizer, methods, metric=metric, bins=bins, deletion=deletion,
                     method_options=method_options, max_length=max_length)  # fmt: skip
    data = load_texts(dataset, text_column)
    n = len(data) if max_examples is None else min(len(data), max_examples)
    rows = []
    with tqdm(total=n, desc="evaluate", unit="example", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            indices = list(range(start, min(start + batch_size, n)))
            rows += evaluate_texts(task, data[indices[0] : indices[-1] + 1][text_column], indices)
            bar.update(len(indices))
    return EvaluationResult.from_rows(rows)
