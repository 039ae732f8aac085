"""The declaration an architecture family provides: where the canonical parts live in a Hugging Face model."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import Tensor
from transformers import PretrainedConfig

from ..block import BlockForm, Layout
from ..record import NormKind

PositionKind = Literal["absolute", "computed", "relative"]
"""How a family encodes positions: a table of ``max_position_embeddings`` learned (or fixed sinusoidal) vectors,
positions computed for any index (rotary, sinusoidal, ALiBi), or relative position buckets (no limit)."""

ValueSplit = Callable[[Tensor, int, int], Tensor]
"""Maps the output of a fused projection ``[batch, seq, width]`` to its value part, ``[batch, seq, n_kv_heads·d_head]``
or ``[batch, seq, n_kv_heads, d_head]``, given ``(n_heads, d_head)`` (``n_kv_heads`` follows from the width). Return a
view of the fused output (basic slicing), so that tests can zero values in place."""


@dataclass(frozen=True)
class FFNParts:
    """Where a feed-forward network's parts live, relative to a block: ``F(h) = out(act(gate(h)) ⊙ up(h))``.

    Attributes:
        gate: The projection the activation reads: the first projection of a plain FFN, the gate of a gated one
            (SwiGLU, GeGLU); for a fused gate/up projection (``fused_gate_up``) the fused module.
        act: The activation module (GELU variants, ReLU, SiLU...), called on the gate's output.
        out: The second projection, whose output is the FFN's output.
        up: Gated FFNs: the projection multiplied by the activated gate; ``None`` for a plain FFN.
        fused_gate_up: ``gate`` outputs ``[gate | up]`` halves, split before the activation (Phi-3's
            ``gate_up_proj``).
    """

    gate: str
    act: str
    out: str
    up: str | None = None
    fused_gate_up: bool = False


ActivationSpec = str | Callable[[PretrainedConfig], Callable[[Tensor], Tensor]] | None
"""A head step's activation: a module path (relative to the whole model), a function of the config returning the
elementwise function the model applies inline (RoBERTa's ``torch.tanh``), or ``None`` for a linear step."""


@dataclass(frozen=True)
class ClassifierStep:
    """One layer of a sequence-classification head: a linear module (path relative to the whole model, e.g.
    ``"bert.pooler.dense"``) and the activation applied to its output."""

    linear: str
    activation: ActivationSpec = None


@dataclass(frozen=True)
class ClassifierHead:
    """A ``...ForSequenceClassification`` head that reads one token's last hidden state (the first: ``[CLS]``)."""

    steps: tuple[ClassifierStep, ...]
    position: int = 0


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
        norm1: Post-LN: the norm after the attention residual. Pre-LN and parallel: the norm the attention reads
            (``None`` if the attention reads the block input itself, as in OLMo 2).
        norm2: Post-LN: the norm after the FFN residual. Pre-LN and parallel: the norm the FFN reads (``None`` if
            the FFN reads the stream itself; the same path as ``norm1`` when both share one norm).
        ffn: Modules applied in sequence to compute the feed-forward output from the FFN input.
        norm_kind: ``"layer"`` or ``"rms"``.
        layout: ``"post_ln"`` (BERT), ``"pre_ln"`` (GPT-2, Llama) or ``"parallel"`` (GPT-J, GPT-NeoX, Falcon, Phi:
            ``out = x + A + F``, both reading the block input); with the norm fields it makes the block's
            :attr:`form`, from which :mod:`inseq_mixing.block` derives everything that depends on the wiring.
        is_causal: Whether the model attends causally (decoder-only); then position ids are derived from the
            attention mask, so left-padded batches give the same numbers as unpadded sequences.
        norm_eps_attr: Name of the epsilon attribute on the norm modules.
        norm_weight_offset: Added to the stored norm weight to get the scale γ (Gemma stores ``γ − 1``).
        value_split: For fused q/k/v projections, the function extracting the values from the fused output.
        final_norm: The norm the bare model applies after its last block (relative to ``model.base_model``), if any.
        weights_index: Position of the attention weights in the attention module's output tuple.
        residual_source: Where the residual entering this attention's residual connection is read, as
            ``(module path, "input" | "output")``; ``None`` for the block input. (The cross-attention of a decoder
            block adds to the stream after self-attention, not to the block input.)
        output_source: Where this view's output is read, as ``(module path, "input" | "output")``; ``None`` for
            the block output. (A decoder's self-attention view ends where its cross-attention has been added.)
        ffn_is_per_token: Whether the ``ffn`` modules map each token on its own (so value zeroing can rerun them
            token by token); ``False`` when the "FFN" of a view is a cross-attention.
        is_cross_attention: Keys are other tokens (the source); the residual becomes an extra last column.
        strip_requested_weights: Remove the attention weights from the module's output after reading them when it
            returned them only because they were requested (transformers 4.x T5 blocks read outputs by position).
        query: Cross-attention only: the query projection, so the attention can be recomputed for changed queries
            (value zeroing of the decoder self-attention changes what the cross-attention reads).
        key: Cross-attention only: the key projection (its output on the source is recorded).
        scaling_attr: Attribute of the attention module holding the score scale (``None``: no scaling, as in T5).
        post_attention_norm: A norm applied to the attention output before the residual addition (Gemma 2/3,
            OLMo 2).
        post_ffn_norm: A norm applied to the FFN output before the residual addition.
        position_kind: ``"absolute"``: inputs longer than the config's ``max_position_embeddings`` (or
            ``n_positions``) minus ``position_offset`` cannot be embedded and raise a clear error, and left padding
            shifts an encoder's positions (a warning); ``"computed"`` (rotary, sinusoidal, ALiBi): longer inputs run
            but were never trained on (a warning); ``"relative"``: no limit.
        position_offset: Positions the embedding table reserves before the first token (RoBERTa counts from
            ``pad_token_id + 1 = 2``).
        classifier: The family's ``...ForSequenceClassification`` head, for measures that explain its prediction.
        ffn_parts: The FFN's parts, for measures that decompose through it (one layout, or alternatives of which
            the first whose modules exist in a block is used: T5's plain and gated FFNs); ``None`` where the view's
            "FFN" is not a feed-forward network (a decoder's self-attention view, whose next step is the
            cross-attention).
    """

    family: str
    blocks: str
    attention: str
    value: str
    output_proj: str
    norm1: str | None
    norm2: str | None
    ffn: tuple[str, ...]
    norm_kind: NormKind
    layout: Layout
    is_causal: bool
    norm_eps_attr: str = "eps"
    norm_weight_offset: float = 0.0
    value_split: ValueSplit | None = None
    final_norm: str | None = None
    weights_index: int = 1
    residual_source: tuple[str, str] | None = None
    output_source: tuple[str, str] | None = None
    ffn_is_per_token: bool = True
    is_cross_attention: bool = False
    strip_requested_weights: bool = False
    query: str | None = None
    key: str | None = None
    scaling_attr: str | None = None
    post_attention_norm: str | None = None
    post_ffn_norm: str | None = None
    position_kind: PositionKind = "computed"
    position_offset: int = 0
    ffn_parts: FFNParts | tuple[FFNParts, ...] | None = None
    classifier: ClassifierHead | None = None

    @property
    def form(self) -> BlockForm:
        """The block's form: its layout, which norms it has, whether its keys are another sequence's tokens."""
        return BlockForm(
            layout=self.layout,
            norm1=self.norm1 is not None,
            norm2=self.norm2 is not None,
            post_attention_norm=self.post_attention_norm is not None,
            post_ffn_norm=self.post_ffn_norm is not None,
            cross_attention=self.is_cross_attention,
        )


@dataclass(frozen=True)
class AdapterChoice:
    """One ``model_type`` whose block layout depends on its config (e.g. OPT-350m is post-LN, other OPTs pre-LN).

    Attributes:
        family: Human-readable family name.
        choose: Returns the adapter for a config, or raises :class:`UnsupportedArchitectureError` naming the setting
            that is not covered.
        variants: Every adapter ``choose`` can return, with the config setting that selects it (for the docs).
    """

    family: str
    choose: Callable[[PretrainedConfig], Adapter]
    variants: tuple[tuple[str, Adapter], ...]


@dataclass(frozen=True)
class EncoderDecoderAdapter:
    """Three views of an encoder-decoder model, each an :class:`Adapter` over the same kind of blocks.

    Attributes:
        family: Human-readable family name.
        encoder: The encoder's self-attention blocks.
        decoder: The decoder's self-attention, with the cross-attention playing the part of the FFN (its output is
            what the second norm receives besides the residual).
        cross: The decoder's cross-attention, with the stream after self-attention as its residual.
    """

    family: str
    encoder: Adapter
    decoder: Adapter
    cross: Adapter
