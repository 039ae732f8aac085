"""Faithfulness of every measure on a batch of texts: score each example once per method, then one batched forward
per bin (all examples and methods, comprehensiveness and sufficiency together) and one for the soft variants."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, no_type_check

import torch
from torch import Tensor

from ..errors import InvalidInputError, UnsupportedArchitectureError
from ..extract import get_adapter
from ..extract._head import head_kind
from ..extract._modules import eval_mode
from ..inputs import check_model, prepare_inputs
from .faithfulness import (
    BINNED,
    DEFAULT_BINS,
    METRICS,
    Batch,
    Deletion,
    chunks,
    make_batch,
    perturbed,
    replacement_id,
    soft_factors,
    top_k,
)
from .scores import check_methods, token_scores

Row = dict[str, Any]
"""One result: ``example``, ``method``, ``metric``, ``bin`` (``None`` for the soft metrics), ``value``, the
explained ``target`` and its full-input ``probability``."""


@dataclass(frozen=True)
class Task:
    """What to evaluate, validated once: the model, its tokenizer, the methods, metrics, bins and deletion.

    Attributes:
        forward_batch: How many sequences one forward pass takes (perturbed inputs are processed in such chunks).
    """

    model: Any
    tokenizer: Any
    methods: list[str]
    metrics: tuple[str, ...] = METRICS
    bins: tuple[float, ...] = DEFAULT_BINS
    replacement: int | None = None
    causal: bool = False
    method_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    forward_batch: int = 64
    max_length: int | None = None


@no_type_check  # validates its own arguments: users get a message, not a type-check error
def make_task(
    model: Any,
    tokenizer: Any,
    methods: Sequence[str],
    *,
    metric: Sequence[str] = METRICS,
    bins: Sequence[float] = DEFAULT_BINS,
    deletion: Deletion = "auto",
    method_options: Mapping[str, Mapping[str, Any]] | None = None,
    forward_batch: int = 64,
    max_length: int | None = None,
) -> Task:
    """Check every argument before anything runs.

    Raises:
        UnsupportedArchitectureError: For a model that is neither a causal LM nor an encoder classifier.
        UnknownMethodError: For a method without token scores.
        InvalidInputError: For unknown metrics, bins outside (0, 1], or a deletion the tokenizer cannot do.
    """
    model = check_model(model)
    kind = head_kind(model, get_adapter(model))
    if kind == "none":
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} has no prediction to evaluate: load a causal LM (AutoModelForCausalLM) or an "
            "encoder sequence classifier (AutoModelForSequenceClassification)."
        )
    metrics = (metric,) if isinstance(metric, str) else tuple(metric)
    unknown = [m for m in metrics if m not in METRICS]
    if unknown or not metrics:
        raise InvalidInputError(f"Unknown metric(s) {unknown or metrics}; choose from {', '.join(METRICS)}.")
    bins = tuple(float(q) for q in bins)
    if not bins or any(not 0 < q <= 1 for q in bins):
        raise InvalidInputError(f"bins must be fractions in (0, 1]; got {bins}.")
    methods = check_methods(methods)
    options = {k: dict(v) for k, v in (method_options or {}).items()}
    stray = [k for k in options if k not in methods]
    if stray:
        raise InvalidInputError(f"method_options for {stray}, which are not evaluated ({methods}).")
    return Task(model=model, tokenizer=tokenizer, methods=methods, metrics=metrics, bins=bins,
                replacement=replacement_id(tokenizer, deletion), causal=kind == "causal_lm", method_options=options,
                forward_batch=forward_batch, max_length=max_length)  # fmt: skip


def probabilities(task: Task, batch: Batch, sequences: Sequence[Sequence[int]], targets: Tensor,
                  factors: Sequence[Tensor] | None = None) -> Tensor:  # fmt: skip
    """``p(target)`` of each sequence's explained prediction (embeddings scaled by ``factors`` when given)."""
    out = []
    device = next(task.model.parameters()).device
    for part in chunks(len(sequences), task.forward_batch):
        ids, mask = batch.padded(sequences[part])
        forward = prepare_inputs(task.model, get_adapter(task.model), ids, mask).forward
        if factors is not None:
            scale = torch.zeros(ids.shape, dtype=torch.float32)
            for row, factor in enumerate(factors[part]):
                n = len(factor)
                scale[row, slice(-n, None) if batch.causal else slice(0, n)] = factor.cpu()
            embeddings = task.model.get_input_embeddings()(forward.pop("input_ids"))
            forward["inputs_embeds"] = embeddings * scale.to(device, embeddings.dtype)[..., None]
        with torch.no_grad(), eval_mode(task.model):
            logits = task.model(**forward).logits
        logits = logits[:, -1] if batch.causal else logits  # causal rows are left-padded: the last is explained
        chosen = targets[part].to(logits.device)
        out.append(logits.float().softmax(-1).gather(-1, chosen[:, None])[:, 0].cpu())
    return torch.cat(out)


def evaluate_texts(task: Task, texts: Sequence[str], indices: Sequence[int]) -> list[Row]:
    """Every metric of every method on ``texts`` (dataset rows ``indices``), as result rows."""
    batch = make_batch(task.tokenizer, texts, task.causal, task.max_length)
    ids, mask = batch.padded()
    device = next(task.model.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    targets, p_full = _full_prediction(task, batch)
    positions = _explained_positions(task, mask)
    scores = {
        method: token_scores(task.model, ids, mask, positions, targets.to(device), method,
                             options=task.method_options.get(method), seeds=torch.tensor(indices)).cpu()
        for method in task.methods
    }  # fmt: skip
    cases = [(e, m) for e in range(len(texts)) for m in task.methods]
    case_targets = targets[[e for e, _ in cases]]
    rows: list[Row] = []

    def add(metric: str, bin_: float | None, probs: Tensor) -> None:
        for (e, m), p in zip(cases, probs.tolist(), strict=True):
            rows.append({"example": int(indices[e]), "method": m, "metric": metric, "bin": bin_,
                         "value": float(p_full[e]) - p, "target": int(targets[e]),
                         "probability": float(p_full[e])})  # fmt: skip

    wanted = [m for m in task.metrics if m in BINNED]
    for q in task.bins if wanted else ():
        tops = [top_k(batch.real_scores(scores[m], e), batch.deletable[e], q) for e, m in cases]
        sequences, order = [], []
        if "comprehensiveness" in wanted:
            sequences += [
                perturbed(batch.tokens[e], top, task.replacement) for (e, _), top in zip(cases, tops, strict=True)
            ]
            order.append("comprehensiveness")
        if "sufficiency" in wanted:
            sequences += [perturbed(batch.tokens[e], _others(batch, e, top), task.replacement)
                          for (e, _), top in zip(cases, tops, strict=True)]  # fmt: skip
            order.append("sufficiency")
        probs = probabilities(task, batch, sequences, case_targets.repeat(len(order)))
        for k, metric in enumerate(order):
            add(metric, q, probs[k * len(cases) : (k + 1) * len(cases)])
    soft = [m for m in task.metrics if m not in BINNED]
    if soft:
        factors = [soft_factors(batch.real_scores(scores[m], e), batch.deletable[e]) for e, m in cases]
        chosen = {"soft_comprehensiveness": 0, "soft_sufficiency": 1}
        sequences = [batch.tokens[e] for e, _ in cases] * len(soft)
        scaled = [f[chosen[metric]] for metric in soft for f in factors]
        probs = probabilities(task, batch, sequences, case_targets.repeat(len(soft)), factors=scaled)
        for k, metric in enumerate(soft):
            add(metric, None, probs[k * len(cases) : (k + 1) * len(cases)])
    return rows


def _others(batch: Batch, example: int, top: set[int]) -> set[int]:
    """The deletable positions not in ``top`` (what sufficiency deletes)."""
    return {i for i, flag in enumerate(batch.deletable[example]) if flag and i not in top}


def _full_prediction(task: Task, batch: Batch) -> tuple[Tensor, Tensor]:
    """The model's prediction on each full input and its probability."""
    ids, mask = batch.padded()
    forward = prepare_inputs(task.model, get_adapter(task.model), ids, mask).forward
    with torch.no_grad(), eval_mode(task.model):
        logits = task.model(**forward).logits
    logits = (logits[:, -1] if batch.causal else logits).float()
    probs = logits.softmax(-1)
    targets = probs.argmax(-1)
    return targets.cpu(), probs.gather(-1, targets[:, None])[:, 0].cpu()


def _explained_positions(task: Task, mask: Tensor) -> Tensor:
    if task.causal:
        return torch.full((mask.shape[0],), mask.shape[1] - 1, device=mask.device)
    position = get_adapter(task.model).classifier.position
    return torch.full((mask.shape[0],), position, device=mask.device)


def attribute_texts(task: Task, texts: Sequence[str], indices: Sequence[int]) -> list[Row]:
    """Each method's token scores for the model's prediction on each text: one row per (example, method) with the
    ``tokens``, the ``scores``, the explained ``target`` and its ``probability``."""
    batch = make_batch(task.tokenizer, texts, task.causal, task.max_length)
    ids, mask = batch.padded()
    device = next(task.model.parameters()).device
    ids, mask = ids.to(device), mask.to(device)
    targets, p_full = _full_prediction(task, batch)
    positions = _explained_positions(task, mask)
    rows: list[Row] = []
    for method in task.methods:
        scores = token_scores(task.model, ids, mask, positions, targets.to(device), method,
                              options=task.method_options.get(method), seeds=torch.tensor(indices)).cpu()  # fmt: skip
        for e, index in enumerate(indices):
            rows.append({"example": int(index), "method": method,
                         "tokens": task.tokenizer.convert_ids_to_tokens(batch.tokens[e]),
                         "scores": batch.real_scores(scores, e).tolist(), "target": int(targets[e]),
                         "probability": float(p_full[e])})  # fmt: skip
    return rows
