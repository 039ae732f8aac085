"""The form of a Transformer block, declared once, and everything that depends on it.

An adapter states its block's :class:`BlockForm` (``Adapter.form``); records carry it (``LayerRecord.form``). This
module alone turns the form into what the rest of the package needs: which normalization layers decompose the
attention's residual sum at a given point of the block (the measures), the identities the recorded parts must
satisfy (the verification), the recomputation of what follows the attention (value zeroing) and the wording of the
architecture table. Nothing else branches on the layout.

Layouts (``x`` the block input, ``A`` the attention output after any post-attention norm ``P_A``, ``F`` the FFN):

- ``post_ln`` (BERT, BART): ``h = N1(x + A)``, ``out = N2(h + F(h))``.
- ``pre_ln`` (GPT-2, Llama): ``m = x + A(N1(x))``, ``out = m + P_F(F(N2(m)))``; either pre-norm may be missing.
- ``parallel`` (GPT-J, GPT-NeoX, Falcon, Phi): ``out = x + A(N1(x)) + P_F(F(N2(x)))``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from torch import Tensor

if TYPE_CHECKING:
    from .record import LayerRecord

Layout = Literal["post_ln", "pre_ln", "parallel"]
NormSlot = Literal["norm1", "norm2", "post_attention_norm", "post_ffn_norm"]
Point = Literal["stream", "ffn_input", "output_without_ffn"]
"""Where the attention's residual sum ``x + A`` is decomposed:

- ``stream``: the residual stream right after the attention's residual addition (ALTI's resultant): ``N1(x + A)``
  post-LN, ``x + A`` otherwise;
- ``ffn_input``: what the FFN reads (+RES1+LN1): ``N1(x + A)`` post-LN, ``N2(x + A)`` pre-LN; in a parallel block
  the FFN reads the block input, so the point is the stream itself;
- ``output_without_ffn``: the block output with the FFN left undecomposed (GlobEnc): ``N2(N1(x + A))`` post-LN;
  pre-LN and parallel blocks have no norm after the FFN, so the point is ``ffn_input``.
"""

Module = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class BlockForm:
    """How a block is wired: its layout and which of its normalization layers exist.

    Attributes:
        layout: ``"post_ln"``, ``"pre_ln"`` or ``"parallel"``.
        norm1: Post-LN: the norm after the attention's residual addition; otherwise the norm the attention reads.
        norm2: Post-LN: the norm after the FFN's residual addition; otherwise the norm the FFN reads.
        post_attention_norm: A norm on the attention output before its residual addition (Gemma 2/3, OLMo 2).
        post_ffn_norm: A norm on the FFN output before its residual addition.
        cross_attention: The keys are other tokens (an encoder-decoder's source): the residual is not one of the keys,
            and measures report it as an extra last column instead of on the diagonal.
    """

    layout: Layout
    norm1: bool = True
    norm2: bool = True
    post_attention_norm: bool = False
    post_ffn_norm: bool = False
    cross_attention: bool = False

    def __post_init__(self) -> None:
        if self.layout not in ("post_ln", "pre_ln", "parallel"):
            raise ValueError(f"Unknown block layout {self.layout!r}; use 'post_ln', 'pre_ln' or 'parallel'.")
        if self.layout == "post_ln" and not (self.norm1 and self.norm2):
            raise ValueError("A post-LN block has both norms (after the attention and after the FFN).")
        if self.layout == "post_ln" and (self.post_attention_norm or self.post_ffn_norm):
            raise ValueError("Post-attention and post-FFN norms are declared for pre-LN or parallel blocks only.")

    def norms_to(self, point: Point) -> tuple[NormSlot, ...]:
        """The norms, in order, that the attention's residual sum passes through on its way to ``point``."""
        if self.layout == "post_ln":
            return ("norm1", "norm2") if point == "output_without_ffn" else ("norm1",)
        if self.layout == "pre_ln" and point != "stream" and self.norm2:
            return ("norm2",)
        return ()

    @property
    def adds_to_stream(self) -> bool:
        """Whether the block output is its input plus what the attention and the FFN add (pre-LN, parallel), so that
        the final hidden state is the embedding plus every layer's additions."""
        return self.layout != "post_ln"

    @property
    def attention_reads_norm1(self) -> bool:
        """Whether the attention reads ``norm1`` of the block input (pre-LN, parallel) rather than the input itself."""
        return self.layout != "post_ln" and self.norm1

    def attention_input(self, modules: BlockModules, block_input: Tensor) -> Tensor:
        """What the attention reads, recomputed from the block input."""
        return modules.norm1(block_input) if self.attention_reads_norm1 else block_input

    @property
    def residual_in_column(self) -> bool:
        """Whether the residual is reported as an extra last column (cross-attention) rather than on the diagonal."""
        return self.cross_attention

    def describe(self) -> str:
        """The form in words, for the architecture table: ``"pre-LN, post-attention norm"``."""
        words = {"post_ln": "post-LN", "pre_ln": "pre-LN", "parallel": "parallel"}[self.layout]
        extras = [name for name, present in (("post-attention norm", self.post_attention_norm),
                                              ("post-FFN norm", self.post_ffn_norm)) if present]  # fmt: skip
        if self.layout == "pre_ln" and not self.norm1:
            extras.append("no pre-norms")
        return ", ".join([words, *extras])

    def deviations(self) -> list[str]:
        """Where the measures' definitions are adapted to this form (every measure stays exact)."""
        notes = []
        if self.layout == "parallel":
            notes.append(
                "the FFN reads the block input, so no norm follows the attention's residual addition: "
                "attention_norm_res_ln and globenc equal attention_norm_res, and ALTI's resultant is x + Attn"
            )
        elif self.layout == "pre_ln" and not self.norm2:
            notes.append("the FFN reads the stream unnormalized: attention_norm_res_ln and globenc equal +RES")
        elif self.layout == "pre_ln":
            notes.append(
                "+LN measures go through the FFN's input norm; globenc is their rollout (no norm follows the FFN)"
            )
        if self.post_attention_norm:
            notes.append("the post-attention norm is decomposed with the true attention output's statistics")
        return notes

    def stream_identities(self, record: LayerRecord) -> dict[str, tuple[Tensor, Tensor]]:
        """The residual additions and norm inputs the recorded parts must reproduce, as ``name -> (rebuilt, real)``.

        ``record``'s norms must already be checked against their own outputs (``verify``'s norm checks).
        """
        attention = record.attention.output.float()
        ffn = record.ffn_output.float()
        x = record.residual.float()
        checks: dict[str, tuple[Tensor, Tensor]] = {}
        added_attention, added_ffn = attention, ffn  # what the residual additions add
        if record.post_attention_norm is not None:
            checks["post-attention norm input = attention output"] = (attention, record.post_attention_norm.input)
            added_attention = record.post_attention_norm.output.float()
        if record.post_ffn_norm is not None:
            checks["post-FFN norm input = FFN output"] = (ffn, record.post_ffn_norm.input)
            added_ffn = record.post_ffn_norm.output.float()
        if record.ffn is not None:
            checks[f"FFN input = {self.ffn_reads(record)[0]}"] = (record.ffn.input, self.ffn_reads(record)[1])
        if self.layout == "post_ln":
            checks["norm1 input = block input + attention output"] = (x + added_attention, record.norm1.input)
            checks["norm2 input = norm1 output + FFN output"] = (record.norm1.output.float() + added_ffn,
                                                                 record.norm2.input)  # fmt: skip
            checks["block output = norm2 output"] = (record.norm2.output, record.output)
            return checks
        if record.norm1 is not None:
            checks["norm1 input = block input"] = (record.norm1.input, x)
        stream = x + added_attention
        if self.layout == "parallel":
            if record.norm2 is not None:
                checks["norm2 input = block input"] = (record.norm2.input, x)
            checks["block output = block input + attention output + FFN output"] = (stream + added_ffn, record.output)
        else:
            if record.norm2 is not None:
                checks["norm2 input = block input + attention output"] = (stream, record.norm2.input)
            checks["block output = stream after attention + FFN output"] = (stream + added_ffn, record.output)
        return checks

    def ffn_reads(self, record: LayerRecord) -> tuple[str, Tensor]:
        """What the FFN reads, as ``(name, the recorded tensor)``: ``norm1`` output post-LN, ``norm2`` output
        otherwise (or, without it, the stream after attention; in a parallel block, the block input)."""
        if self.layout == "post_ln":
            return "norm1 output", record.norm1.output
        if record.norm2 is not None:
            return "norm2 output", record.norm2.output
        if self.layout == "parallel":
            return "block input", record.residual
        added = record.attention.output if record.post_attention_norm is None else record.post_attention_norm.output
        return "block input + attention output", record.residual.float() + added.float()

    def stream_after_attention(self, modules: BlockModules, residual: Tensor, attention_output: Tensor) -> Tensor:
        """The residual stream right after the attention's residual addition, recomputed with the block's modules."""
        added = attention_output.to(residual.dtype)
        if modules.post_attention_norm is not None:
            added = modules.post_attention_norm(added)
        stream = residual + added
        return modules.norm1(stream) if self.layout == "post_ln" else stream

    def rest_of_block(
        self, modules: BlockModules, residual: Tensor, attention_output: Tensor, ffn_output: Tensor | None = None
    ) -> Tensor:
        """The block output for a given attention output, recomputed with the block's own modules.

        A parallel block's FFN reads the block input, not the attention: its recorded ``ffn_output`` is reused when
        given, and computed from ``residual`` otherwise. ``modules`` may be the real modules or any maps with the same
        wiring (DecompX passes linearized ones acting on per-source parts).
        """
        stream = self.stream_after_attention(modules, residual, attention_output)
        if self.layout == "post_ln":
            return modules.norm2(stream + modules.ffn(stream))
        if self.layout == "parallel":
            if ffn_output is None:
                ffn_output = modules.ffn(modules.norm2(residual) if modules.norm2 is not None else residual)
            ffn = ffn_output.to(stream.dtype)
        else:
            ffn = modules.ffn(modules.norm2(stream) if modules.norm2 is not None else stream)
        return stream + (modules.post_ffn_norm(ffn) if modules.post_ffn_norm is not None else ffn)


@dataclass(frozen=True)
class BlockModules:
    """The block's own modules as callables, for recomputing what follows its attention (``None``: absent)."""

    norm1: Module | None
    norm2: Module | None
    ffn: Module
    post_attention_norm: Module | None = None
    post_ffn_norm: Module | None = None
