"""Deletion faithfulness of token scores (DeYoung et al., 2020, "ERASER"; as used by ALTI and DecompX), and the soft
variants of Zhao & Aletras (2023, "Incorporating Attribution Importance for Improving Faithfulness Metrics").

For bins ``q`` (fractions of the tokens that can be deleted): **comprehensiveness** ``p(y|x) − p(y|x ∖ top_q)``
(higher: the top tokens matter), **sufficiency** ``p(y|x) − p(y|top_q)`` (lower: the top tokens suffice); the
AOPC of each is its mean over the bins. **Soft** variants scale each token's input embedding by ``1 − s̃`` (soft
comprehensiveness) or by ``s̃`` (soft sufficiency) instead of deleting, with ``s̃`` the scores min-max normalized
over the deletable tokens. ``y`` is the model's prediction on the full input, held fixed.

Deletable tokens: every real token but the tokenizer's special tokens and, for causal LMs, the explained (last)
position, whose next-token prediction is measured. The top ``ceil(q·n)`` of them by score are taken (at least one).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from ..errors import InvalidInputError

METRICS: tuple[str, ...] = ("comprehensiveness", "sufficiency", "soft_comprehensiveness", "soft_sufficiency")
"""Every faithfulness metric :func:`~inseq_mixing.evaluate` reports."""

BINNED = frozenset({"comprehensiveness", "sufficiency"})
"""The metrics computed per bin (the soft ones have one value per example)."""

DEFAULT_BINS: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2, 0.5)
"""Fractions of the deletable tokens removed (ALTI's ``aupc.py`` and DecompX's Table 1)."""

Deletion = Literal["auto", "mask", "remove"] | int


@dataclass(frozen=True)
class Batch:
    """Tokenized examples, padded on the side the model reads (causal LMs: left, so the explained position is last).

    Attributes:
        tokens: Each example's token ids (unpadded).
        deletable: Per example, which positions may be deleted.
        causal: Whether the model is a causal LM.
        pad_id: The id written into padding.
    """

    tokens: list[list[int]]
    deletable: list[list[bool]]
    causal: bool
    pad_id: int

    def padded(self, sequences: Sequence[Sequence[int]] | None = None) -> tuple[Tensor, Tensor]:
        """``(ids, mask)`` of ``sequences`` (default: the examples), padded."""
        sequences = self.tokens if sequences is None else sequences
        length = max(len(s) for s in sequences)
        ids = torch.full((len(sequences), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, seq in enumerate(sequences):
            span = slice(length - len(seq), length) if self.causal else slice(0, len(seq))
            ids[row, span] = torch.tensor(seq, dtype=torch.long)
            mask[row, span] = 1
        return ids, mask

    def real_scores(self, scores: Tensor, row: int) -> Tensor:
        """Example ``row``'s scores over its own tokens (padding dropped)."""
        n = len(self.tokens[row])
        return scores[row, -n:] if self.causal else scores[row, :n]


def make_batch(tokenizer: Any, texts: Sequence[str], causal: bool, max_length: int | None = None) -> Batch:
    """Tokenize ``texts`` (with the tokenizer's special tokens) and mark what may be deleted.

    Raises:
        InvalidInputError: For an example with nothing to delete.
    """
    special = set(tokenizer.all_special_ids)
    tokens, deletable = [], []
    for text in texts:
        ids = tokenizer(text, truncation=max_length is not None, max_length=max_length)["input_ids"]
        flags = [i not in special for i in ids]
        if causal:
            flags[-1] = False  # the explained position
        if not any(flags):
            raise InvalidInputError(f"Example {text!r} has no token that can be deleted (special tokens are kept).")
        tokens.append(list(ids))
        deletable.append(flags)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return Batch(tokens=tokens, deletable=deletable, causal=causal, pad_id=pad_id)


def replacement_id(tokenizer: Any, deletion: Deletion) -> int | None:
    """The token id deleted tokens become, or ``None`` to remove them.

    Raises:
        InvalidInputError: For ``"mask"`` with a tokenizer that has no mask token, or an unknown mode.
    """
    if isinstance(deletion, bool) or not isinstance(deletion, (int, str)):
        raise InvalidInputError(f"deletion must be 'auto', 'mask', 'remove' or a token id; got {deletion!r}.")
    if isinstance(deletion, int):
        if not 0 <= deletion < len(tokenizer):
            raise InvalidInputError(
                f"deletion token id {deletion} is outside the vocabulary (0..{len(tokenizer) - 1})."
            )
        return deletion
    if deletion == "remove":
        return None
    if deletion not in ("auto", "mask"):
        raise InvalidInputError(f"deletion must be 'auto', 'mask', 'remove' or a token id; got {deletion!r}.")
    if tokenizer.mask_token_id is not None:
        return tokenizer.mask_token_id
    if deletion == "mask":
        raise InvalidInputError(
            "The tokenizer has no mask token; pass deletion='remove' or deletion=<a replacement token id>."
        )
    return None


def top_k(scores: Tensor, deletable: Sequence[bool], fraction: float) -> set[int]:
    """The positions of the ``ceil(fraction·n)`` highest-scored deletable tokens (ties: the earlier first)."""
    candidates = [i for i, flag in enumerate(deletable) if flag]
    k = max(1, math.ceil(fraction * len(candidates)))
    values = scores[candidates].tolist()
    order = sorted(range(len(candidates)), key=lambda c: (-values[c], c))
    return {candidates[c] for c in order[:k]}


def perturbed(tokens: Sequence[int], drop: set[int], replacement: int | None) -> list[int]:
    """``tokens`` with the positions in ``drop`` replaced (or removed when ``replacement`` is ``None``)."""
    if replacement is None:
        return [t for i, t in enumerate(tokens) if i not in drop]
    return [replacement if i in drop else t for i, t in enumerate(tokens)]


def soft_factors(scores: Tensor, deletable: Sequence[bool]) -> tuple[Tensor, Tensor]:
    """Per-token embedding factors ``(1 − s̃, s̃)`` for the soft metrics; 1 for tokens that are never deleted
    (``s̃ = 0.5`` everywhere when every deletable token has the same score)."""
    flags = torch.tensor(deletable, device=scores.device)
    values = scores.double()
    low, high = values[flags].min(), values[flags].max()
    normalized = ((values - low) / (high - low)).clamp(0, 1) if high > low else torch.full_like(values, 0.5)
    one = torch.ones_like(normalized)
    return torch.where(flags, 1 - normalized, one).float(), torch.where(flags, normalized, one).float()


def chunks(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``size`` over ``range(n)``."""
    for start in range(0, n, max(1, size)):
        yield slice(start, min(start + size, n))
