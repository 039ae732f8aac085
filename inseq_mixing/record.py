"""The plain per-layer record that extractors produce and measures consume.

Only tensors and a few flags live here, so that ``measures/`` and ``rollout.py`` never see a module or a hook. Shapes
use the glossary ``batch layer head query key d_model d_head``. For self-attention ``query`` and ``key`` index the
same tokens; a cross-attention record (encoder-decoder models) uses the same :class:`AttentionRecord` with ``key``
indexing the source tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

NormKind = Literal["layer", "rms"]


@runtime_checkable
class RestOfBlock(Protocol):
    """``rest_of_block(attention_output, batch_idx, query_idx, *, final_norm=False) -> block output`` per token."""

    def __call__(
        self, attention_output: Tensor, batch_idx: Tensor, query_idx: Tensor, *, final_norm: bool = False
    ) -> Tensor: ...


@dataclass(frozen=True)
class NormRecord:
    """A normalization layer together with the true vectors it normalized.

    ``LN(y) = weight ⊙ (y − mean(y)) / sqrt(var(y) + eps) + bias`` (biased variance) for ``kind="layer"`` and
    ``RMS(y) = weight ⊙ y / sqrt(mean(y²) + eps)`` for ``kind="rms"``. Given the statistics of ``input``, both are
    linear maps, which is what makes a per-token decomposition through them exact.

    Attributes:
        kind: ``"layer"`` (LayerNorm) or ``"rms"`` (RMSNorm).
        weight: The scale γ as it multiplies the normalized vector (for norms that store ``γ − 1`` the offset
            is already added), or ``None`` when the norm has no scale.
        bias: The shift β, or ``None``.
        eps: The epsilon added to the variance (or mean square).
        input: The true vectors that were normalized, ``[batch, query, d_model]``.
        output: The module's real output, ``[batch, query, d_model]``.
    """

    kind: NormKind
    weight: Float[Tensor, " d_model"] | None
    bias: Float[Tensor, " d_model"] | None
    eps: float
    input: Float[Tensor, "batch query d_model"]
    output: Float[Tensor, "batch query d_model"]


@dataclass(frozen=True)
class AttentionRecord:
    """One multi-head attention module, split per head.

    The module output is ``Σ_h α^h v^h W_O^h + b_O`` with ``v`` the value vectors (value bias included).

    Attributes:
        alpha: Attention weights ``[batch, head, query, key]`` (post-softmax, eval mode).
        values: Value vectors per query head ``[batch, head, key, d_head]``, value bias included; grouped-query
            models have their key/value heads repeated to the query heads.
        w_o: Rows of the output projection that read each head, ``[head, d_head, d_model]``.
        b_o: The output projection bias ``[d_model]`` or ``None``.
        output: The real attention output (after the output projection, bias included) ``[batch, query, d_model]``.
    """

    alpha: Float[Tensor, "batch head query key"]
    values: Float[Tensor, "batch head key d_head"]
    w_o: Float[Tensor, "head d_head d_model"]
    b_o: Float[Tensor, " d_model"] | None
    output: Float[Tensor, "batch query d_model"]


@dataclass(frozen=True)
class LayerRecord:
    """Everything the measures need about one Transformer block.

    Post-LN blocks (BERT): ``h = norm1(x + Attn(x))``, ``out = norm2(h + FFN(h))``.
    Pre-LN blocks (GPT-2, Llama): ``m = x + P_A(Attn(norm1(x)))``, ``out = m + P_F(FFN(norm2(m)))``, where the
    post-attention and post-FFN norms ``P_A``, ``P_F`` exist in Gemma 2/3 and OLMo 2 and either pre-norm may be
    missing (OLMo 2 has none).
    Parallel blocks (GPT-J, GPT-NeoX, Falcon, Phi): ``out = x + Attn(norm1(x)) + FFN(norm2(x))``.

    Attributes:
        layer_idx: Index of the block (0 = first).
        pre_norm: ``True`` for pre-LN blocks, ``False`` for post-LN blocks.
        residual: The block input ``x``, which the residual connection around attention carries.
        attention: The self-attention module split per head.
        norm1: Post-LN: the norm after the attention residual (input ``x + Attn(x)``). Pre-LN and parallel: the
            norm the attention reads (input ``x``), or ``None``.
        norm2: Post-LN: the norm after the FFN residual. Pre-LN: the norm the FFN reads (input ``m``), or ``None``.
            Parallel: the norm the FFN reads (input ``x``).
        ffn_output: The feed-forward network's output ``FFN(·)``.
        output: The block output.
        rest_of_block: Recomputes, token by token, what follows the attention: given attention outputs ``[n, d_model]``
            of the tokens at ``(batch_idx[n], query_idx[n])`` it returns their block outputs ``[n, d_model]``
            (through the model's final norm too when called with ``final_norm=True`` on the last layer). Used by
            value zeroing; ``None`` if not provided.
        is_last: Whether this is the last block of its stack.
        stack: ``"layers"`` for decoder-only and encoder-only models; ``"encoder"``, ``"decoder"`` (decoder
            self-attention) or ``"cross"`` (decoder cross-attention) for encoder-decoder models.
        is_cross_attention: Keys are source tokens, not the query's own sequence: the residual is not one of the keys
            and measures report it as an extra last column.
        post_attention_norm: A norm applied to the attention output before the residual addition, or ``None``.
        post_ffn_norm: A norm applied to the FFN output before the residual addition, or ``None``.
        parallel: Attention and FFN both read the block input and are added to it together.
    """

    layer_idx: int
    pre_norm: bool
    residual: Float[Tensor, "batch query d_model"]
    attention: AttentionRecord
    norm1: NormRecord | None
    norm2: NormRecord | None
    ffn_output: Float[Tensor, "batch query d_model"]
    output: Float[Tensor, "batch query d_model"]
    rest_of_block: RestOfBlock | None = None
    is_last: bool = False
    stack: str = "layers"
    is_cross_attention: bool = False
    post_attention_norm: NormRecord | None = None
    post_ffn_norm: NormRecord | None = None
    parallel: bool = False

    @property
    def compute_dtype(self) -> torch.dtype:
        """The lowest floating-point precision among the block's recorded tensors.

        Models loaded in half precision may keep some modules in float32 (transformers' ``_keep_in_fp32_modules``,
        e.g. T5's FFN output projection), so the block output alone does not tell how precisely the block computed.
        """
        tensors = [self.residual, self.attention.alpha, self.attention.values, self.attention.output]
        tensors += [self.ffn_output, self.output]
        for norm in (self.norm1, self.norm2, self.post_attention_norm, self.post_ffn_norm):
            if norm is not None:
                tensors += [norm.input, norm.output]
        return lowest_precision(t.dtype for t in tensors)


def lowest_precision(dtypes: Iterable[torch.dtype]) -> torch.dtype:
    """The floating-point dtype with the largest machine epsilon among ``dtypes`` (non-float dtypes are ignored)."""
    floats = [dtype for dtype in dtypes if dtype.is_floating_point]
    return max(floats, key=lambda dtype: torch.finfo(dtype).eps) if floats else torch.float32
