"""Direct, materializing implementations of the definitions in METHODS.md, for testing the fast measures.

Everything here builds the ``[batch, query, key, d_model]`` vectors explicitly, in float64, with its own LayerNorm /
RMSNorm arithmetic (nothing is imported from ``inseq_mixing.measures``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from inseq_mixing.record import LayerRecord, NormRecord


def attention_vectors(record: LayerRecord) -> Tensor:
    """``z_ij = Σ_h α^h_ij (v^h_j W_O^h)`` as a ``[batch, query, key, d_model]`` tensor, head by head, passed through
    the post-attention norm (linearized at the true attention output) when the block has one."""
    attn = record.attention
    alpha = attn.alpha.double()
    z = 0
    for h in range(alpha.shape[1]):
        f_bkd = attn.values[:, h].double() @ attn.w_o[h].double()
        z = z + alpha[:, h, :, :, None] * f_bkd[:, None, :, :]
    if record.post_attention_norm is not None:
        z = through_norm(record.post_attention_norm, z)
    return z


def with_residual(record: LayerRecord, z: Tensor) -> Tensor:
    """``r_ij = z_ij + δ_ij x_i``; for cross-attention the residual is appended as an extra last key instead."""
    if record.is_cross_attention:
        return torch.cat([z, record.residual.double()[:, :, None]], dim=2)
    r = z.clone()
    n = r.shape[1]
    r[:, range(n), range(n)] += record.residual.double()
    return r


def norm_std(norm: NormRecord) -> Tensor:
    """``σ(y_i)`` of the true input vectors, ``[batch, query]``."""
    y = norm.input.double()
    if norm.kind == "layer":
        second = ((y - y.mean(-1, keepdim=True)) ** 2).mean(-1)
    else:
        second = (y**2).mean(-1)
    return torch.sqrt(second + norm.eps)


def through_norm(norm: NormRecord, v: Tensor) -> Tensor:
    """``γ ⊙ P v / σ(y_i)`` for ``v`` of shape ``[batch, query, ..., d_model]`` (bias excluded)."""
    if norm.kind == "layer":
        v = v - v.mean(-1, keepdim=True)
    if norm.weight is not None:
        v = v * norm.weight.double()
    sigma = norm_std(norm)
    return v / sigma.reshape(*sigma.shape, *([1] * (v.dim() - 2)))


def norm_bias(norm: NormRecord) -> Tensor:
    return norm.bias.double() if norm.bias is not None else torch.zeros(norm.input.shape[-1], dtype=torch.float64)


def output_bias(record: LayerRecord) -> Tensor:
    """What the attention adds that belongs to no token, ``[batch, query, d_model]``: ``b_O``, through the
    post-attention norm (plus its β) when there is one."""
    b_o = record.attention.b_o
    batch, n, d = record.attention.output.shape
    b_o = b_o.double() if b_o is not None else torch.zeros(d, dtype=torch.float64)
    b_o = b_o.expand(batch, n, d)
    if record.post_attention_norm is not None:
        return through_norm(record.post_attention_norm, b_o) + norm_bias(record.post_attention_norm)
    return b_o


def attention_added(record: LayerRecord) -> Tensor:
    """What the residual addition really adds: the attention output, or the post-attention norm's output."""
    added = record.post_attention_norm.output if record.post_attention_norm is not None else record.attention.output
    return added.double()


def norms_to(record: LayerRecord, point: str) -> tuple[NormRecord, ...]:
    """The norms the attention's residual sum passes through up to ``point`` (the block form says which)."""
    return record.norms(record.form.norms_to(point))


def through_norms(norms: tuple[NormRecord, ...], v: Tensor) -> Tensor:
    """``v`` through the linear parts of ``norms`` in order (biases excluded)."""
    for norm in norms:
        v = through_norm(norm, v)
    return v


def bias_through_norms(norms: tuple[NormRecord, ...], bias: Tensor) -> Tensor:
    """A bias vector through ``norms``, each adding its own β: the part of the decomposition no token owns."""
    for norm in norms:
        bias = through_norm(norm, bias) + norm_bias(norm)
    return bias


def stream_after_attention(record: LayerRecord) -> Tensor:
    """The real residual stream right after the attention's residual addition (ALTI's resultant)."""
    norms = norms_to(record, "stream")
    return norms[-1].output.double() if norms else record.residual.double() + attention_added(record)


def naive_measure(record: LayerRecord, name: str) -> Tensor:
    """The unnormalized ``[batch, query, key]`` matrix of measure ``name``, straight from its definition."""
    z = attention_vectors(record)
    if name in ("attention", "attention_norm"):
        scores = record.attention.alpha.double().mean(1) if name == "attention" else z.norm(dim=-1)
        return torch.cat([scores, scores.new_zeros(*scores.shape[:2], 1)], -1) if record.is_cross_attention else scores
    r = with_residual(record, z)
    if name == "attention_norm_res":
        return r.norm(dim=-1)
    if name == "attention_norm_res_ln":
        return through_norms(norms_to(record, "ffn_input"), r).norm(dim=-1)
    if name == "globenc":
        return through_norms(norms_to(record, "output_without_ffn"), r).norm(dim=-1)
    if name == "alti":
        transformed = through_norms(norms_to(record, "stream"), r)
        resultant = transformed.sum(2) + alti_bias(record)
        l1 = resultant.abs().sum(-1)[:, :, None] - (resultant[:, :, None] - transformed).abs().sum(-1)
        return l1.clamp_min(0)
    raise KeyError(name)


def alti_bias(record: LayerRecord) -> Tensor:
    """The part of ALTI's resultant that belongs to no token: the attention's bias through the stream's norms
    (``γ₁ P b_O / σ + β₁`` post-LN, ``b_O`` itself pre-LN and parallel)."""
    return bias_through_norms(norms_to(record, "stream"), output_bias(record))


def brute_force_value_zeroing(
    model,
    input_ids: Tensor,
    layer_idx: int,
    token_idx: int,
    heads: list[int] | None = None,
    *,
    stack: str = "layers",
    decoder_input_ids: Tensor | None = None,
) -> Tensor:
    """``1 − cos`` between every token's clean and corrupted output of block ``layer_idx``, by rerunning the model.

    The value projection's output of token ``token_idx`` is zeroed (value bias included) in ``heads`` (all if
    ``None``) of block ``layer_idx`` of ``stack`` only; earlier blocks run clean, so the block sees its original
    input. For encoder-decoders, ``stack`` names the attention ("encoder", "decoder" self or "cross") and the
    compared output is that block's output. Returns ``[batch, query]``.
    """
    from inseq_mixing.extract import EncoderDecoderAdapter, blocks_of, eager_attention, get_adapter
    from inseq_mixing.extract._modules import output_projection_per_head, resolve

    adapter = get_adapter(model)
    view = getattr(adapter, stack) if isinstance(adapter, EncoderDecoderAdapter) else adapter
    block = blocks_of(model, stack)[layer_idx]
    n_heads = block_heads(model, stack)
    d_head = output_projection_per_head(resolve(block, view.output_proj), n_heads)[0].shape[1]

    def zero_value(_module, _inputs, output):
        output = output.clone()
        values = view.value_split(output, n_heads, d_head) if view.value_split else output
        if heads is None:
            values[:, token_idx] = 0
        else:
            per_head = values.view(*values.shape[:2], -1, d_head)
            per_head[:, token_idx, heads] = 0
        return output

    captured: dict[str, Tensor] = {}

    def capture(_module, _inputs, output):
        captured["out"] = output[0] if isinstance(output, tuple) else output

    kwargs = {"input_ids": input_ids}
    if decoder_input_ids is not None:
        kwargs.update(decoder_input_ids=decoder_input_ids, use_cache=False)
    with torch.no_grad(), eager_attention(model):  # the attention implementation the measures read
        handle = block.register_forward_hook(capture)
        model.base_model(**kwargs)
        clean = captured["out"].double()
        zero_handle = resolve(block, view.value).register_forward_hook(zero_value)
        try:
            model.base_model(**kwargs)
        finally:
            zero_handle.remove()
            handle.remove()
    corrupted = captured["out"].double()
    # 1 − cos(a, b) = ½‖a/‖a‖ − b/‖b‖‖²: in float64 too, 1 − cos of nearly equal vectors keeps no digit below 1e-16.
    unit = lambda v: v / v.norm(dim=-1, keepdim=True)  # noqa: E731
    return 0.5 * (unit(corrupted) - unit(clean)).pow(2).sum(-1)


def block_heads(model, stack: str) -> int:
    """Number of attention heads of ``stack``'s blocks, from the config."""
    config = model.config
    for name in ("num_attention_heads", "n_head", "num_heads", "encoder_attention_heads"):
        if stack in ("decoder", "cross") and hasattr(config, "decoder_attention_heads"):
            return config.decoder_attention_heads
        if hasattr(config, name):
            return getattr(config, name)
    raise AttributeError("no head count in config")
