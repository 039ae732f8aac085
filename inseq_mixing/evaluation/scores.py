"""Token scores of every measure for one explained prediction, the input of the faithfulness metrics.

Prediction methods (``attribute_prediction``) give their scores directly. Context-mixing measures give the explained
position's row of their rollout through the last layer (``rollout=True``; measures that already span the model, like
DecompX's maps or HTA, their last layer). ``"random"`` is the seeded chance baseline every table should include.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..errors import UnknownMethodError
from ..extract import get_adapter
from ..extract._head import head_kind
from ..measures import MEASURES
from ..mixing import context_mixing
from ..prediction import attribute_prediction

RANDOM = "random"
"""The chance baseline: scores drawn uniformly at random (seeded per example)."""


def scorable_methods() -> tuple[str, ...]:
    """Every method :func:`token_scores` accepts: the prediction methods, the context-mixing ones and ``random``."""
    return (*(name for name, m in MEASURES.items() if m.explains or m.maps), RANDOM)


def check_methods(methods: Sequence[str]) -> list[str]:
    """``methods`` as a list, each a known name.

    Raises:
        UnknownMethodError: Listing the names that can be evaluated.
    """
    methods = [methods] if isinstance(methods, str) else list(methods)
    known = scorable_methods()
    unknown = [m for m in methods if m not in known]
    if unknown or not methods:
        raise UnknownMethodError(
            f"Cannot evaluate {', '.join(map(repr, unknown)) or 'no method'}; methods with token scores: "
            f"{', '.join(known)}."
        )
    return methods


def token_scores(
    model: Any,
    ids: Tensor,
    mask: Tensor,
    positions: Tensor,
    targets: Tensor,
    method: str,
    *,
    options: Mapping[str, Any] | None = None,
    seeds: Tensor | None = None,
) -> Tensor:
    """Scores ``[batch, seq]`` of every input token for the prediction at ``positions`` (``[batch]``) of ``targets``.

    Args:
        model: A causal LM or an encoder sequence classifier.
        ids, mask: The padded batch.
        positions: The explained position per sequence (a classifier's: the token its head reads).
        targets: The explained output per sequence (token id or class).
        method: A name of :func:`scorable_methods`.
        options: The method's own options.
        seeds: Per-sequence seeds of the ``random`` baseline.
    """
    options = dict(options or {})
    if method == RANDOM:
        seeds = torch.arange(ids.shape[0]) if seeds is None else seeds
        scores = torch.zeros(mask.shape, device=mask.device)
        for row, seed in enumerate(seeds):  # drawn for the real tokens only: padding does not shift the draws
            real = mask[row].nonzero()[:, 0]
            draws = torch.rand(len(real), generator=torch.Generator().manual_seed(int(seed)))
            scores[row, real] = draws.to(mask.device)
        return scores
    measure = MEASURES[method]
    if measure.explains:
        position = None if head_kind(model, get_adapter(model)) == "classifier" else positions
        return attribute_prediction(model, ids, method, attention_mask=mask, target=targets, position=position,
                                    **options).scores.float()  # fmt: skip
    rolled = not measure.whole_model and measure.aggregation != "rollout_only"
    maps = context_mixing(model, ids, method, attention_mask=mask, rollout=rolled, **options)
    last = maps[:, -1]  # [batch, query, key]
    rows = last[torch.arange(ids.shape[0], device=last.device), positions.to(last.device)]
    return rows.float() * mask
