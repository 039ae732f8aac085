"""The declaration an architecture family provides: where the canonical parts live in a Hugging Face model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor

from ..record import NormKind

ValueSplit = Callable[[Tensor, int, int], Tensor]
"""Maps the output of a fused projection ``[batch, seq, width]`` to the value part ``[batch, seq, n_kv_heads·d_head]``,
given ``(n_heads, d_head)``."""


@dataclass(frozen=True)
class Adapter:
    """Maps the canonical parts of a Transformer block to module paths of a Hugging Face model.

    An adapter declares; it runs nothing. :mod:`inseq_mixing.extract._hooks` turns it into forward hooks. All paths
    are dotted attribute paths: ``blocks`` relative to the bare model (``model.base_model``), the others relative to
    one block.

    Attributes:
        family: Human-readable family name for docs and error messages.
        blocks: The ``ModuleList`` of Transformer blocks.
        attention: The module whose forward returns ``(output, attention_weights, ...)``.
        value: The value projection (or the fused q/k/v projection, see ``value_split``).
        output_proj: The attention output projection (``nn.Linear`` or transformers ``Conv1D``).
        norm1: Post-LN: the norm after the attention residual. Pre-LN: the norm the attention reads.
        norm2: Post-LN: the norm after the FFN residual. Pre-LN: the norm the FFN reads.
        ffn: Modules applied in sequence to compute the feed-forward output from the FFN input.
        norm_kind: ``"layer"`` or ``"rms"``.
        pre_norm: ``True`` for pre-LN blocks.
        is_causal: Whether the model attends causally (decoder-only); then position ids are derived from the
            attention mask, so left-padded batches give the same numbers as unpadded sequences.
        norm_eps_attr: Name of the epsilon attribute on the norm modules.
        norm_weight_offset: Added to the stored norm weight to get the scale γ (Gemma stores ``γ − 1``).
        value_split: For fused q/k/v projections, the function extracting the values from the fused output.
        final_norm: The norm the bare model applies after its last block (relative to ``model.base_model``), if any.
    """

    family: str
    blocks: str
    attention: str
    value: str
    output_proj: str
    norm1: str
    norm2: str
    ffn: tuple[str, ...]
    norm_kind: NormKind
    pre_norm: bool
    is_causal: bool
    norm_eps_attr: str = "eps"
    norm_weight_offset: float = 0.0
    value_split: ValueSplit | None = None
    final_norm: str | None = None
