"""The plain per-layer record that extractors produce and measures consume.

Only tensors and a few flags live here, so that ``measures/`` and ``rollout.py`` never see a module or a hook. Shapes
use the glossary ``batch layer head query key d_model d_head``. For self-attention ``query`` and ``key`` index the
same tokens; a cross-attention record (encoder-decoder models) uses the same :class:`AttentionRecord` with ``key``
indexing the source tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

from .block import BlockForm, NormSlot

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
        w_v: The value projection per query head ``[head, d_in, d_head]`` (key/value heads repeated), recorded for
            measures that decompose what the attention reads (with the FFN's parts); else ``None``.
        b_v: Its bias ``[head, d_head]``, or ``None``.
        value_input: What the value projection really read ``[batch, key, d_in]`` (with ``w_v``), or ``None``.
    """

    alpha: Float[Tensor, "batch head query key"]
    values: Float[Tensor, "batch head key d_head"]
    w_o: Float[Tensor, "head d_head d_model"]
    b_o: Float[Tensor, " d_model"] | None
    output: Float[Tensor, "batch query d_model"]
    w_v: Float[Tensor, "head d_in d_head"] | None = None
    b_v: Float[Tensor, "head d_head"] | None = None
    value_input: Float[Tensor, "batch key d_in"] | None = None


@dataclass(frozen=True)
class FFNRecord:
    """A feed-forward network split into its parts: ``F(h) = (f(h W_in + b_in) ⊙ g) W_out + b_out``.

    ``g = h W_up + b_up`` for gated FFNs (SwiGLU, GeGLU: ``f`` applies to the gate projection ``W_in``), ``g = 1``
    otherwise. Weights are stored as ``[input, output]`` (rows are vectors, as everywhere here).

    Attributes:
        input: What the FFN reads, ``h`` (``[batch, query, d_model]``).
        w_in: The projection the activation reads (the gate of gated FFNs), ``[d_model, d_ff]``.
        b_in: Its bias, or ``None``.
        pre_activation: ``u = h W_in + b_in`` as the model computed it, ``[batch, query, d_ff]``.
        activation: The activation ``f`` (the model's own elementwise module: GELU variants, ReLU, SiLU...).
        activated: ``f(u)`` as the model computed it.
        w_up: Gated FFNs: the up projection ``[d_model, d_ff]``; ``None`` otherwise.
        b_up: Its bias, or ``None``.
        up: ``g = h W_up + b_up`` as the model computed it, or ``None``.
        w_out: The second projection, ``[d_ff, d_model]``.
        b_out: Its bias, or ``None``.
        output: The FFN's real output, ``[batch, query, d_model]`` (before any post-FFN norm).
        activation_input: What the activation module really received (checked to equal ``pre_activation``).
    """

    input: Float[Tensor, "batch query d_model"]
    w_in: Float[Tensor, "d_model d_ff"]
    b_in: Float[Tensor, " d_ff"] | None
    pre_activation: Float[Tensor, "batch query d_ff"]
    activation: Callable[[Tensor], Tensor]
    activated: Float[Tensor, "batch query d_ff"]
    w_up: Float[Tensor, "d_model d_ff"] | None
    b_up: Float[Tensor, " d_ff"] | None
    up: Float[Tensor, "batch query d_ff"] | None
    w_out: Float[Tensor, "d_ff d_model"]
    b_out: Float[Tensor, " d_model"] | None
    output: Float[Tensor, "batch query d_model"]
    activation_input: Float[Tensor, "batch query d_ff"]

    @property
    def is_gated(self) -> bool:
        return self.w_up is not None


@dataclass(frozen=True)
class LayerRecord:
    """Everything the measures need about one Transformer block (its wiring: :class:`~inseq_mixing.block.BlockForm`).

    Attributes:
        layer_idx: Index of the block (0 = first).
        form: How the block is wired (layout, which norms exist, cross-attention view).
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
        post_attention_norm: A norm applied to the attention output before the residual addition, or ``None``.
        post_ffn_norm: A norm applied to the FFN output before the residual addition, or ``None``.
        ffn: The feed-forward network split into its parts, when a measure asked for them (else ``None``).
    """

    layer_idx: int
    form: BlockForm
    residual: Float[Tensor, "batch query d_model"]
    attention: AttentionRecord
    norm1: NormRecord | None
    norm2: NormRecord | None
    ffn_output: Float[Tensor, "batch query d_model"]
    output: Float[Tensor, "batch query d_model"]
    rest_of_block: RestOfBlock | None = None
    is_last: bool = False
    stack: str = "layers"
    post_attention_norm: NormRecord | None = None
    post_ffn_norm: NormRecord | None = None
    ffn: FFNRecord | None = None

    @property
    def is_cross_attention(self) -> bool:
        """Keys are source tokens: the residual is not one of the keys (measures give it an extra last column)."""
        return self.form.cross_attention

    def norms(self, slots: Iterable[NormSlot]) -> tuple[NormRecord, ...]:
        """The block's norms named by ``slots`` (e.g. ``self.form.norms_to("stream")``), in order."""
        return tuple(getattr(self, slot) for slot in slots)

    @property
    def compute_dtype(self) -> torch.dtype:
        """The lowest floating-point precision among the block's recorded tensors.

        Models loaded in half precision may keep some modules in float32 (transformers' ``_keep_in_fp32_modules``,
        e.g. T5's FFN output projection), so the block output alone does not tell how precisely the block computed.
        """
        tensors = [self.residual, self.attention.alpha, self.attention.values, self.attention.output]
        tensors += [self.ffn_output, self.output]
        if self.ffn is not None:
            tensors += [self.ffn.input, self.ffn.pre_activation, self.ffn.activated, self.ffn.output]
        for norm in (self.norm1, self.norm2, self.post_attention_norm, self.post_ffn_norm):
            if norm is not None:
                tensors += [norm.input, norm.output]
        return lowest_precision(t.dtype for t in tensors)


def lowest_precision(dtypes: Iterable[torch.dtype]) -> torch.dtype:
    """The floating-point dtype with the largest machine epsilon among ``dtypes`` (non-float dtypes are ignored)."""
    floats = [dtype for dtype in dtypes if dtype.is_floating_point]
    return max(floats, key=lambda dtype: torch.finfo(dtype).eps) if floats else torch.float32


@dataclass(frozen=True)
class HeadStep:
    """One layer of a classification head: ``y = f(x W + b)`` (``f`` is ``None`` for the last, linear layer).

    Attributes:
        weight: ``[input, output]``.
        bias: ``[output]`` or ``None``.
        activation: The elementwise activation applied to ``x W + b`` (the model's own), or ``None``.
        input: What the layer really read, ``[batch, input]``.
        pre_activation: ``x W + b`` as the model computed it, ``[batch, output]``.
    """

    weight: Float[Tensor, "d_in d_out"]
    bias: Float[Tensor, " d_out"] | None
    activation: Callable[[Tensor], Tensor] | None
    input: Float[Tensor, "batch d_in"]
    pre_activation: Float[Tensor, "batch d_out"]


@dataclass(frozen=True)
class HeadRecord:
    """What the model computes after its last block, for measures that explain its predictions.

    Causal LMs: the final norm and the unembedding. Sequence classifiers: the steps from one token's last hidden state
    to the class logits (BERT's pooler ``tanh(h W_p + b_p)`` then the classifier).

    Attributes:
        hidden: What the output layer reads ``[batch, query, d_model]``: the final norm's output, or the last block's
            output where there is no final norm.
        final_norm: The model's final norm with its true input, or ``None`` if it has none.
        output_weight: Causal LMs: the unembedding rows ``[vocab, d_model]``; ``None`` otherwise.
        output_bias: Its bias ``[vocab]``, or ``None``.
        classifier: Sequence classifiers: the head's layers in order; empty otherwise.
        classifier_position: Which token's hidden state the classifier reads (0: the first).
        logits: The model's real output logits: ``[batch, query, vocab]`` or ``[batch, classes]``.
        logit_softcap: Gemma 2/3's final soft-capping ``c·tanh(z/c)`` of the logits, or ``None``; explanations
            explain the linear logit ``z`` before it.
    """

    hidden: Float[Tensor, "batch query d_model"]
    final_norm: NormRecord | None
    output_weight: Float[Tensor, "n_outputs d_model"] | None
    output_bias: Float[Tensor, " n_outputs"] | None
    classifier: tuple[HeadStep, ...] = ()
    classifier_position: int = 0
    logits: Tensor | None = None
    logit_softcap: float | None = None
