"""DecompX: a per-source decomposition of every hidden state, carried through every layer up to the prediction.

Modarressi, Fayyaz, Aghazadeh, Yaghoobzadeh & Pilehvar, "DecompX: Explaining Transformers Decisions by Propagating
Token Decomposition", ACL 2023 (https://aclanthology.org/2023.acl-long.149); reference code: mohsenfayyaz/DecompX
(BERT and RoBERTa classifiers through modified modeling files; here: every family, from hooks).

Every position ``i`` carries one vector per source token ``k``, ``x_{i⇐k}``, with ``Σ_k x_{i⇐k} = x_i`` (layer 0: each
embedding on its own token). Once the real statistics are fixed, every step of a block is linear in the parts:
attention ``Σ_h α^h_ij (x_{j⇐k} W_V^h) W_O^h``; norms linearized at the real vectors; the FFN's projections applied to
each part and its activation linearized elementwise at the real pre-activation, ``θ = f(u)/u`` (``f'(0)`` where
``u = 0``; gated FFNs multiply the up projection's parts by the real activated gate). Every bias — the attention's
``Σ_h b_V^h W_O^h + b_O``, each norm's β, the FFN's, the head's — is shared among the parts by **AbsDot**,
``ω_k = |b·z_k| / Σ_k |b·z_k|`` (or kept as its own part with ``bias="separate"``). The head (a classifier's pooler and
classifier, or a causal LM's final norm and unembedding) is decomposed the same way, so each source's part of the
explained logit adds up to the logit exactly. The block's wiring comes from :class:`~inseq_mixing.block.BlockForm`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from ..block import BlockModules
from ..errors import DecompositionError
from ..norms import inverse_scale, linear_part
from ..record import FFNRecord, HeadRecord, LayerRecord, NormRecord
from ._chunks import DEFAULT_MEMORY_BUDGET
from ._explained import Explained

BiasRule = Literal["absdot", "separate"]
IDENTITY_TOLERANCE = {torch.float64: 1e-8, torch.float32: 1e-4, torch.float16: 3e-2, torch.bfloat16: 1e-1}
"""Largest ``|Σ_k x_{i⇐k} − x_i|`` allowed after a block, relative to ``max(1, max|x|)``."""


def share(parts: Tensor, bias: Tensor | None, rule: BiasRule, dots: Tensor | None = None) -> Tensor:
    """``parts [..., source, width]`` plus the bias shared by AbsDot (``ω_k ∝ |b·z_k|``; uniform when all are 0), or
    added to the last source (the bias part) with ``rule="separate"``. ``dots`` may hold precomputed ``b·z_k`` of
    every source."""
    if bias is None:
        return parts
    weights = _weights((parts * bias).sum(-1) if dots is None else dots, rule)
    return parts + weights[..., None] * bias


def _with_sources(stat: Tensor, parts: Tensor) -> Tensor:
    """A ``[batch, position]`` (or ``[batch, position, width]``) statistic broadcast over the source dimension."""
    return stat[:, :, None, None] if stat.dim() == 2 else stat[:, :, None, :]


class DecompX:
    """The cross-layer state: the per-source parts ``[batch, position, source, d_model]`` of the current hidden state.

    Args:
        explained: What is explained (``attribute_prediction``); ``None`` for the layer-wise maps of
            ``context_mixing``: ``‖x^l_{i⇐k}‖₂`` after every layer.
        padding_mask: ``[batch, seq]``, 1 for real tokens.
        bias: ``"absdot"`` (the paper's rule) or ``"separate"`` (biases kept as their own part, in ``rest``).
        memory_budget: Bytes the per-chunk intermediates (the FFN's ``[position, source chunk, d_ff]``) may use.
    """

    def __init__(
        self,
        *,
        padding_mask: Tensor | None = None,
        explained: Explained | None = None,
        bias: BiasRule = "absdot",
        memory_budget: int = DEFAULT_MEMORY_BUDGET,
    ) -> None:
        if bias not in ("absdot", "separate"):
            raise ValueError(f"bias must be 'absdot' or 'separate'; got {bias!r}.")
        self.explained, self.mask, self.rule, self.memory_budget = explained, padding_mask, bias, memory_budget
        self.parts: Tensor | None = None
        self.maps: list[Tensor] = []
        self.causal = False

    # ---- per layer -------------------------------------------------------------------------------------------------

    def layer(self, record: LayerRecord) -> None:
        if record.stack != "layers" or record.ffn is None:
            raise DecompositionError("the model", record.layer_idx, "DecompX needs single-stack records with the FFN",
                                     float("inf"), 0)  # fmt: skip
        dtype = torch.float64 if record.compute_dtype == torch.float64 else torch.float32
        if self.parts is None:
            self.parts = self._initial(record.residual.to(dtype))
            self.causal = bool((record.attention.alpha.triu(1) == 0).all())
        modules = BlockModules(
            norm1=self._norm(record.norm1), norm2=self._norm(record.norm2), ffn=self._ffn(record.ffn),
            post_attention_norm=self._norm(record.post_attention_norm), post_ffn_norm=self._norm(record.post_ffn_norm),
        )  # fmt: skip
        form = record.form
        attended = self._attention(record, form.attention_input(modules, self.parts))
        self.parts = form.rest_of_block(modules, self.parts, attended)
        self._check(record)
        if self.explained is None:
            self.maps.append(self._sources(self.parts).norm(dim=-1))

    def _initial(self, x: Tensor) -> Tensor:
        batch, n, d = x.shape
        parts = x.new_zeros(batch, n, n + (self.rule == "separate"), d)
        parts[:, torch.arange(n), torch.arange(n)] = x
        return parts

    def _sources(self, parts: Tensor) -> Tensor:
        return parts[..., :-1, :] if self.rule == "separate" else parts

    def _norm(self, norm: NormRecord | None) -> Callable[[Tensor], Tensor] | None:
        if norm is None:
            return None

        def linearized(parts: Tensor) -> Tensor:
            out = linear_part(norm, parts.to(torch.float32) if parts.dtype != torch.float64 else parts)
            out = out * _with_sources(inverse_scale(norm).to(out.dtype), out)
            return share(out, None if norm.bias is None else norm.bias.to(out.dtype), self.rule)

        return linearized

    def _attention(self, record: LayerRecord, read: Tensor) -> Tensor:
        """``Σ_h Σ_j α^h_ij (x_{j⇐k} W_V^h) W_O^h`` plus the attention's bias, shared as the authors' code shares it.

        The bias ``Σ_h b_V^h W_O^h + b_O`` is shared by AbsDot among the parts of the vector it is added to: the
        residual stream ``x + Attn`` (the attention output itself when a post-attention norm reads it first). At the
        first layer, where every value vector comes from one token, each value bias stays with its token instead (the
        authors' first-layer path; the golden data follow both rules).
        """
        attention = record.attention
        alpha = attention.alpha.to(read.dtype)
        w_v, w_o = attention.w_v.to(read.dtype), attention.w_o.to(read.dtype)
        b_v = None if attention.b_v is None else attention.b_v.to(read.dtype)
        own_value_bias = b_v is not None and record.layer_idx == 0
        out = torch.zeros_like(read)
        for sources, rows in self._chunks(read.shape, extra=alpha.shape[1] * w_v.shape[-1] * 2):
            v = torch.einsum("bjkd,hde->bhjke", read[:, rows.start :, sources], w_v)
            if own_value_bias:  # value j's bias to source j
                positions = torch.arange(rows.start, read.shape[1], device=read.device)
                own = (positions[:, None] == torch.arange(sources.start, sources.stop, device=read.device)).to(v.dtype)
                v = v + own[None, None, :, :, None] * b_v[None, :, None, None, :]
            mixed = torch.einsum("bhij,bhjke->bhike", alpha[:, :, rows, rows.start :], v)
            out[:, rows, sources] = torch.einsum("bhike,hed->bikd", mixed, w_o)
        bias = torch.zeros(w_o.shape[-1], dtype=read.dtype, device=read.device)
        if b_v is not None and not own_value_bias:
            bias = bias + torch.einsum("he,hed->d", b_v, w_o)
        if attention.b_o is not None:
            bias = bias + attention.b_o.to(read.dtype)
        joined = out if record.form.post_attention_norm else out + self.parts  # what the bias is added to
        return out + _weights((joined * bias).sum(-1), self.rule)[..., None] * bias

    def _ffn(self, ffn: FFNRecord) -> Callable[[Tensor], Tensor]:
        def decomposed(parts: Tensor) -> Tensor:
            dtype = parts.dtype
            w_in, w_out = ffn.w_in.to(dtype), ffn.w_out.to(dtype)
            u = ffn.pre_activation.to(dtype)
            if ffn.is_gated:  # the gate is held at its real value; the up projection is decomposed
                scale, w_lin, b_lin = ffn.activated.to(dtype), ffn.w_up.to(dtype), ffn.b_up
            else:  # θ = f(u)/u, f'(0) where u = 0
                scale = torch.where(
                    u == 0,
                    _slope_at_zero(ffn.activation, dtype, u.device),
                    ffn.activated.to(dtype) / torch.where(u == 0, 1, u),
                )
                w_lin, b_lin = w_in, ffn.b_in
            b_lin = None if b_lin is None else b_lin.to(dtype)
            # AbsDot needs every source's b·(h_k W) = h_k·(W b): cheap without the [.., d_ff] parts themselves.
            in_weights = None if b_lin is None else _weights(parts @ (w_lin @ b_lin), self.rule)
            b_out = None if ffn.b_out is None else ffn.b_out.to(dtype)
            out = torch.zeros(*parts.shape[:-1], w_out.shape[-1], dtype=dtype, device=parts.device)
            out_dots = torch.zeros(parts.shape[:-1], dtype=dtype, device=parts.device)
            for sources, rows in self._chunks(parts.shape, extra=3 * w_lin.shape[-1]):
                chunk = parts[:, rows, sources]
                hidden = chunk @ w_lin
                if b_lin is not None:
                    hidden = hidden + in_weights[:, rows, sources, None] * b_lin
                hidden = hidden * scale[:, rows, None, :]
                out[:, rows, sources] = hidden @ w_out
                if b_out is not None:
                    out_dots[:, rows, sources] = hidden @ (w_out @ b_out)
            return share(out, b_out, self.rule, out_dots)

        return decomposed

    def _chunks(self, shape: torch.Size, extra: int):
        """``(source slice, position slice)`` pairs covering the parts under ``memory_budget``: a causal model's
        positions before a chunk's first source hold no part of it and are skipped (the bias part reaches all)."""
        batch, n, n_sources, _ = shape
        size = max(1, min(n_sources, self.memory_budget // (4 * batch * n * max(extra, 1))))
        for start in range(0, n_sources, size):
            stop = min(start + size, n_sources)
            first = start if self.causal and stop <= n else 0
            yield slice(start, stop), slice(first, n)

    def _check(self, record: LayerRecord) -> None:
        total, real = self.parts.sum(2), record.output.to(self.parts.dtype)
        error = ((total - real).abs().max() / real.abs().max().clamp_min(1)).item()
        tolerance = IDENTITY_TOLERANCE.get(record.compute_dtype, IDENTITY_TOLERANCE[torch.float32])
        if not error <= tolerance:
            raise DecompositionError("DecompX", record.layer_idx, "Σ_k x_{i⇐k} = block output", error, tolerance)

    # ---- after the last layer --------------------------------------------------------------------------------------

    def result(self, head: HeadRecord | None = None) -> Tensor | dict:
        if self.explained is None:
            return torch.stack(self.maps, dim=1)  # [batch, layer, position, source]
        explained = self.explained
        at = explained.gather(self.parts)  # [batch, T, source(+1), d]
        if explained.head.classifier:
            logits = self._classifier(explained.head, at)  # [batch, T, source, classes]
            target = logits.gather(-1, explained.target[:, :, None, None].expand(*logits.shape[:3], 1))[..., 0]
            if explained.foil is not None:
                target = (
                    target - logits.gather(-1, explained.foil[:, :, None, None].expand(*logits.shape[:3], 1))[..., 0]
                )
            per_source, value = target, None
        else:
            per_source = self._unembedding(explained, at)
            value = None
        rest = {}
        if self.rule == "separate":
            rest["bias"] = per_source[..., -1]
            per_source = per_source[..., :-1]
        return {"scores": per_source, "per_layer": None, "rest": rest, "value": value}

    def _classifier(self, head: HeadRecord, parts: Tensor) -> Tensor:
        for step in head.classifier:
            dtype = parts.dtype
            parts = share(parts @ step.weight.to(dtype), None if step.bias is None else step.bias.to(dtype), self.rule)
            if step.activation is not None:
                u = step.pre_activation.to(dtype)[:, None, None, :]
                theta = torch.where(u == 0, _slope_at_zero(step.activation, dtype, u.device),
                                    step.activation(u) / torch.where(u == 0, 1, u))  # fmt: skip
                parts = parts * theta
        return parts

    def _unembedding(self, explained: Explained, parts: Tensor) -> Tensor:
        head, dtype = explained.head, parts.dtype
        norm = head.final_norm
        if norm is not None:
            parts = linear_part(norm, parts) * explained.gather(inverse_scale(norm)[..., None])[..., None, :].to(dtype)
            parts = share(parts, None if norm.bias is None else norm.bias.to(dtype), self.rule)
        u = explained.unembedding_direction().to(dtype)  # [batch, T, d]
        logits = (parts * u[:, :, None]).sum(-1)
        if head.output_bias is not None:
            bias = head.output_bias.to(dtype)
            value = bias[explained.target] - (0 if explained.foil is None else bias[explained.foil])
            dots = parts @ (head.output_weight.to(dtype).T @ bias)  # b·(z W^T) per part, without the vocab vector
            logits = logits + _weights(dots, self.rule) * value[..., None]
        return logits


def _weights(dots: Tensor, rule: BiasRule) -> Tensor:
    """The AbsDot weights of ``dots [..., source]`` (or the bias part's indicator with ``rule="separate"``)."""
    if rule == "separate":
        weights = torch.zeros_like(dots)
        weights[..., -1] = 1
        return weights
    dots = dots.abs()
    total = dots.sum(-1, keepdim=True)
    return torch.where(total > 0, dots / torch.where(total > 0, total, 1), 1.0 / dots.shape[-1])


def _slope_at_zero(activation: Callable[[Tensor], Tensor], dtype: torch.dtype, device: torch.device) -> Tensor:
    """``f'(0)`` of an elementwise activation, by autograd."""
    with torch.enable_grad():
        zero = torch.zeros((), dtype=dtype, device=device, requires_grad=True)
        (slope,) = torch.autograd.grad(activation(zero), zero)
    return slope.detach()
