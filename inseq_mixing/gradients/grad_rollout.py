"""Gradient-weighted attention rollout (Chefer et al., ICCV 2021, "Generic Attention-model Explainability for
Interpreting Bi-Modal and Encoder-Decoder Transformers").

For the explained logit ``y``: ``Ā_l = mean_h (∇_{A_l} y ⊙ A_l)⁺``, ``R_0 = I``, ``R_l = R_{l−1} + Ā_l R_{l−1}``; the
scores are the explained position's row of ``R_L``. One forward with the attention weights in the graph, then one
backward per explained position (all sequences of the batch together: their logits do not interact).
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import ExtractionError
from ..extract._modules import eager_attention, eval_mode
from ..inputs import ModelInputs
from ..measures._chunks import DEFAULT_MEMORY_BUDGET
from ..measures._explained import Explained

PROGRESS_MIN_POSITIONS = 16
"""Show a progress bar from this many explained positions on."""


def grad_rollout(
    model: Any,
    inputs: ModelInputs,
    *,
    explained: Explained,
    padding_mask: Tensor | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> dict[str, Any]:
    """Scores ``[batch, T, seq]`` of the explained logits (differences), with the real values they explain.

    The value explained is the model's own output logit (after any soft-capping), which is what is differentiated.
    """
    del memory_budget  # one [batch, seq, seq] rollout per position; nothing to chunk
    where = type(model).__name__
    with torch.enable_grad(), eval_mode(model), eager_attention(model):
        output = model(**inputs.forward, output_attentions=True)
        attentions = tuple(a for a in (output.attentions or ()) if a is not None)
        if not attentions or not all(a.requires_grad for a in attentions):
            raise ExtractionError(
                f"{where} did not return differentiable attention weights with output_attentions=True, so the "
                "gradient-weighted rollout cannot be computed."
            )
        logits = output.logits
        values = _explained_logits(logits, explained)  # [batch, T]
        n_explained = values.shape[1]
        batch = torch.arange(values.shape[0], device=values.device)
        scores = []
        for t in tqdm(range(n_explained), desc="grad_rollout", disable=n_explained < PROGRESS_MIN_POSITIONS):
            grads = torch.autograd.grad(values[:, t].sum(), attentions, retain_graph=t + 1 < n_explained)
            rolled = _rollout([(g * a).detach() for g, a in zip(grads, attentions, strict=True)], explained.dtype)
            scores.append(rolled[batch, explained.positions[:, t]])  # the explained position's row
    mask = inputs.masks["layers"][0] if padding_mask is None else padding_mask
    rows = torch.stack(scores, dim=1) * mask[:, None, :]
    return {"scores": rows, "per_layer": None, "rest": {}, "value": values.detach().to(rows.dtype)}


def _explained_logits(logits: Tensor, explained: Explained) -> Float[Tensor, "batch explained"]:
    if logits.dim() == 2:  # a classifier: [batch, classes]
        logits = logits[:, None].expand(-1, explained.target.shape[1], -1)
    else:  # a causal LM: [batch, seq, vocab] read at the explained positions
        logits = explained.gather(logits)
    value = logits.gather(-1, explained.target[..., None])[..., 0]
    return value if explained.foil is None else value - logits.gather(-1, explained.foil[..., None])[..., 0]


def _rollout(weighted: list[Tensor], dtype: torch.dtype) -> Float[Tensor, "batch seq seq"]:
    """``R_L`` from the per-layer ``∇A ⊙ A`` ``[batch, head, seq, seq]``."""
    first = weighted[0]
    eye = torch.eye(first.shape[-1], dtype=dtype, device=first.device)
    rolled = eye.expand(first.shape[0], -1, -1)
    for layer in weighted:
        mixed = layer.to(dtype).clamp_min(0).mean(1)
        rolled = rolled + mixed @ rolled
    return rolled
