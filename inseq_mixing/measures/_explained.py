"""What a prediction explanation explains: positions, target and foil outputs, fixed before the recording pass."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from ..norms import inverse_scale
from ..record import HeadRecord


@dataclass(frozen=True)
class Explained:
    """The outputs an explanation is about, ``T`` of them per sequence (``T = 1``, or every position).

    Attributes:
        positions: The explained positions ``[batch, T]`` (a causal LM's prediction of the next token there; a
            classifier's is the position its head reads).
        target: The explained output (token or class) ``[batch, T]``.
        foil: The contrasted output ``[batch, T]``, or ``None`` (then the target's logit itself is explained).
        head: The model's head recorded by a plain forward (final norm statistics, unembedding, logits).
    """

    positions: Int[Tensor, "batch explained"]
    target: Int[Tensor, "batch explained"]
    foil: Int[Tensor, "batch explained"] | None
    head: HeadRecord

    @property
    def dtype(self) -> torch.dtype:
        """The precision explanations are computed in: float64 for float64 models, float32 otherwise."""
        return torch.float64 if self.head.hidden.dtype == torch.float64 else torch.float32

    def gather(self, per_token: Tensor) -> Tensor:
        """``per_token[b, positions[b, t]]`` for ``[batch, query, ...]`` tensors → ``[batch, T, ...]``."""
        index = self.positions.reshape(*self.positions.shape, *([1] * (per_token.dim() - 2)))
        return per_token.gather(1, index.expand(-1, -1, *per_token.shape[2:]))

    def unembedding_direction(self) -> Float[Tensor, "batch explained d_model"]:
        """``u = U[target] − U[foil]`` (``U[target]`` without a foil), rows of the unembedding."""
        weight = self.head.output_weight.to(self.dtype)
        u = weight[self.target]
        return u if self.foil is None else u - weight[self.foil]

    def logit_reader(self) -> Float[Tensor, "batch explained d_model"]:
        """``g_t`` with ``u · N_f,lin(v) = g_t · v`` for any part ``v`` of the final norm's input at ``t``.

        ``N_f,lin(v) = γ ⊙ P v / σ_t`` with ``σ_t`` the real input's statistics (``P`` centres for LayerNorm); ``P`` is
        symmetric, so ``g_t = P(γ ⊙ u_t) / σ_t``. Without a final norm, ``g_t = u_t``.
        """
        u = self.unembedding_direction()
        norm = self.head.final_norm
        if norm is None:
            return u
        scaled = u if norm.weight is None else u * norm.weight.to(self.dtype)
        if norm.kind == "layer":
            scaled = scaled - scaled.mean(dim=-1, keepdim=True)
        return scaled * self.gather(inverse_scale(norm)[..., None])

    def output_bias_share(self) -> Float[Tensor, "batch explained"]:
        """What belongs to no input part after the final norm: ``u · β_f`` and ``b[target] − b[foil]``."""
        u = self.unembedding_direction()
        total = torch.zeros(u.shape[:2], dtype=u.dtype, device=u.device)
        norm = self.head.final_norm
        if norm is not None and norm.bias is not None:
            total = total + u @ norm.bias.to(self.dtype)
        if self.head.output_bias is not None:
            bias = self.head.output_bias.to(self.dtype)
            total = total + bias[self.target] - (0 if self.foil is None else bias[self.foil])
        return total

    def linear_logit(self) -> Float[Tensor, "batch explained"]:
        """The explained logit (difference) as the model's last linear layer computes it (before any soft-capping)."""
        hidden = self.gather(self.head.hidden.to(self.dtype))
        value = (hidden * self.unembedding_direction()).sum(-1)
        if self.head.output_bias is not None:
            bias = self.head.output_bias.to(self.dtype)
            value = value + bias[self.target] - (0 if self.foil is None else bias[self.foil])
        return value

    def class_logit(self) -> Float[Tensor, "batch explained"]:
        """A classifier's explained logit (difference), from its real output logits."""
        logits = self.head.logits.to(self.dtype)[:, None].expand(-1, self.target.shape[1], -1)
        value = logits.gather(-1, self.target[..., None])[..., 0]
        return value if self.foil is None else value - logits.gather(-1, self.foil[..., None])[..., 0]
