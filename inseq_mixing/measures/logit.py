"""Logit and ALTI-Logit: each input token's share of a predicted logit, through the attention of every layer.

Ferrando, Gállego, Tsiamas & Costa-jussà, "Explaining How Transformers Use Context to Build Predictions", ACL 2023
(https://aclanthology.org/2023.acl-long.301); reference code: mt-upc/logit-explanations (one unpadded sequence, last
position; here: batches, padding, any position, every position at once).

At the explained position ``t``, layer ``l``'s attention adds ``Σ_j T^l_{t←j} + b^l`` to the residual stream, with
``T^l_{t←j} = q_t Σ_h α^h_tj f^h(x_j)`` (value bias and the first norm's shift inside ``f``; ``q_t`` and the linear part
of a post-attention norm where the block has one). Through the final norm linearized at the real statistics of
``t`` and the unembedding direction ``u = U[target] − U[foil]``, each part is a logit: ``Δ^l_j = g_t · T^l_{t←j}``
with ``g_t = P(γ_f ⊙ u) / σ_t`` (:meth:`Explained.logit_reader`). **Logit**: ``score_j = Σ_l Δ^l_j``.
**ALTI-Logit**: layer ``l``'s ``Δ^l`` is carried to the input tokens through the ALTI rollout of the layers below,
``score_k = Σ_l Σ_j Δ^l_j R^{l−1}_{jk}`` (``R^{−1} = I``). The FFN outputs, the attention biases, the embedding at
``t`` and the final norm's and unembedding's biases belong to no token (``rest``), so that
``Σ_j score_j + Σ rest = u · (final hidden state) + bias`` = the logit (difference), exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import InvalidInputError
from ..record import HeadRecord, LayerRecord
from ..rollout import mask_padding, normalize_rows
from ._chunks import DEFAULT_MEMORY_BUDGET
from ._decompose import attention_parts
from ._explained import Explained
from .alti import alti


class LogitContributions:
    """The cross-layer state of ``logit`` and ``alti_logit``: each layer's logit parts at the explained positions.

    Args:
        explained: What is explained (positions, target, foil, the head of a plain forward).
        padding_mask: ``[batch, seq]``, 1 for real tokens (the rollout masks padding).
        track: Carry each layer's parts to the input tokens through the ALTI rollout (ALTI-Logit).
        per_head: Keep each head's parts too.
        memory_budget: Bytes ALTI may use per chunk.
    """

    def __init__(
        self,
        *,
        explained: Explained,
        padding_mask: Tensor,
        track: bool = False,
        per_head: bool = False,
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
    ) -> None:
        self.explained, self.mask, self.track, self.per_head = explained, padding_mask, track, per_head
        self.memory_budget = memory_budget
        self.reader = explained.logit_reader()  # g_t [batch, T, d_model]
        self.layers: list[Tensor] = []  # [batch, T, seq] per layer (tracked to the input for ALTI-Logit)
        self.heads: list[Tensor] = []  # [batch, head, T, seq] per layer
        self.rest: dict[str, Tensor] = {}
        self.rollout: Tensor | None = None  # R^{l−1}, [batch, seq, seq]

    def _read(self, per_token: Tensor) -> Tensor:
        """``g_t · v_t`` for a ``[batch, query, d_model]`` tensor of vectors added to the stream."""
        return (self.explained.gather(per_token.float()) * self.reader).sum(-1)

    def layer(self, record: LayerRecord) -> None:
        if not record.form.adds_to_stream or record.stack != "layers":
            raise InvalidInputError(
                f"logit and alti_logit decompose the residual stream of decoder-only pre-LN or parallel blocks; "
                f"this model's {record.stack} blocks are {record.form.describe()} (the stream passes through a norm "
                "after each residual addition). Use decompx, which follows every norm, instead."
            )
        parts = attention_parts(record)
        idx = record.layer_idx
        if idx == 0:
            self.rest["embedding"] = self._read(record.residual)
        f_bhkd = parts.head_vectors()
        alpha_bhtk = self.explained.gather(parts.alpha.float().transpose(1, 2)).transpose(1, 2)
        scale_bt = self.explained.gather(parts.query_scale[..., None])[..., 0]
        read_bhkt = torch.einsum("bhkd,btd->bhkt", f_bhkd, self.reader)
        delta_bhtk = alpha_bhtk * read_bhkt.transpose(-1, -2) * scale_bt[:, None, :, None]
        if self.track and self.rollout is not None:
            delta_bhtk = delta_bhtk @ self.rollout[:, None]
        self.layers.append(delta_bhtk.sum(1))
        if self.per_head:
            self.heads.append(delta_bhtk)
        self.rest[f"attention_bias.{idx}"] = self._read(parts.bias)
        added_ffn = record.ffn_output if record.post_ffn_norm is None else record.post_ffn_norm.output
        self.rest[f"mlp.{idx}"] = self._read(added_ffn)
        if self.track:
            contributions = normalize_rows(
                mask_padding(alti(record, memory_budget=self.memory_budget), self.mask, self.mask)
            )
            self.rollout = contributions if self.rollout is None else contributions @ self.rollout

    def result(self, head: HeadRecord | None = None) -> dict[str, Tensor | dict[str, Tensor] | None]:
        """``per_layer [batch, layer, T, seq]``, ``per_head [batch, layer, head, T, seq]`` (or ``None``) and
        ``rest`` (name -> ``[batch, T]``), the final norm's and unembedding's biases included."""
        rest = dict(self.rest)
        rest["output_bias"] = self.explained.output_bias_share()
        return {
            "per_layer": torch.stack(self.layers, dim=1),
            "per_head": torch.stack(self.heads, dim=1) if self.per_head else None,
            "rest": rest,
        }


def logit_state(
    *, explained: Explained, padding_mask: Tensor, per_head: bool = False, memory_budget: int = DEFAULT_MEMORY_BUDGET
) -> LogitContributions:
    """The ``logit`` measure's state: per-layer parts, not tracked."""
    return LogitContributions(
        explained=explained, padding_mask=padding_mask, track=False, per_head=per_head, memory_budget=memory_budget
    )


def alti_logit_state(
    *, explained: Explained, padding_mask: Tensor, per_head: bool = False, memory_budget: int = DEFAULT_MEMORY_BUDGET
) -> LogitContributions:
    """The ``alti_logit`` measure's state: per-layer parts tracked to the input through the ALTI rollout."""
    return LogitContributions(
        explained=explained, padding_mask=padding_mask, track=True, per_head=per_head, memory_budget=memory_budget
    )
