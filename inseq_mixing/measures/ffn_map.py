"""The feed-forward map: what the FFN (and the whole layer) does to context mixing, as a token-to-token map.

Kobayashi, Kuribayashi, Yokoi & Inui, "Analyzing Feed-Forward Blocks in Transformers through the Lens of Attention
Maps", ICLR 2024 (https://openreview.net/forum?id=mYWsyTuiRp). The attention block's decomposition of the FFN's input,
``h_i = Σ_j h_{i←j} + b_i`` (the residual-added attention parts through the norm the FFN reads), is carried through
the FFN by integrated gradients from the zero baseline along ``α·h_i``: ``F_{i←j} = (∫₀¹ J_FFN(α h_i) dα) h_{i←j}``,
with ``steps`` midpoints. For ``FFN = W2 f(W1 h + b1) + b2`` this is ``W2 (ḡ_i ⊙ (W1 h_{i←j}))``,
``ḡ_i = mean_s f'(α_s W1 h_i + b1)``; gated FFNs ``W2 (f(g) ⊙ u)`` follow the product rule. ``FFN(0)``, the bias's
share and the integration error belong to no token. ``ffn_map`` is ``‖F_{i←j}‖₂``; ``attention_ffn_map`` the norms
of the whole layer's parts (``h_{i←j}`` plus ``F_{i←j}``, through the norm after the FFN where there is one).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from jaxtyping import Float
from torch import Tensor

from ..errors import InvalidInputError
from ..norms import inverse_scale, linear_part
from ..record import LayerRecord
from ._chunks import DEFAULT_MEMORY_BUDGET
from ._decompose import attention_parts

COMPLETENESS_WARNING = 1e-2
"""Relative integration error (``‖Σ_j F_{i←j} + rest − FFN(h_i)‖ / ‖FFN(h_i)‖``) above which a warning asks for more
``steps``."""


def _derivative(activation: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    """``f'(x)`` elementwise, by autograd through the model's own activation."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(activation(x).sum(), x)
    return grad.detach()


def _ffn_input_parts(record: LayerRecord, keys: slice) -> Tensor:
    """``h_{i←j}`` for the keys of ``keys``: ``[batch, query, key chunk, d_model]`` (no bias)."""
    parts = attention_parts(record)
    alpha = parts.alpha.float()[..., keys] * parts.query_scale[:, None, :, None]
    r = torch.einsum("bhqk,bhkd->bqkd", alpha, parts.head_vectors()[:, :, keys])
    n_queries = r.shape[1]
    diagonal = torch.arange(keys.start, min(keys.stop, n_queries), device=r.device)
    r[:, diagonal, diagonal - keys.start] += record.residual.float()[:, diagonal]
    for norm in record.norms(record.form.norms_to("ffn_input")):
        r = linear_part(norm, r) * inverse_scale(norm)[:, :, None, None]
    return r


def _ffn_of_parts(record: LayerRecord, steps: int) -> Callable[[Tensor], Tensor]:
    """The FFN's integrated-gradient map ``h part [..., d_model] → F part [..., d_model]`` at each query."""
    ffn = record.ffn
    h = ffn.input.float()
    alphas = (torch.arange(steps, dtype=torch.float32, device=h.device) + 0.5) / steps
    w_in, w_out = ffn.w_in.float(), ffn.w_out.float()
    b_in = 0 if ffn.b_in is None else ffn.b_in.float()
    mean_slope = torch.zeros_like(ffn.pre_activation, dtype=torch.float32)
    if ffn.is_gated:
        w_up, b_up = ffn.w_up.float(), 0 if ffn.b_up is None else ffn.b_up.float()
        mean_value = torch.zeros_like(mean_slope)
        for a in alphas:
            gate, up = a * (h @ w_in) + b_in, a * (h @ w_up) + b_up
            mean_slope += _derivative(ffn.activation, gate) * up / steps  # ∂/∂gate of f(gate) ⊙ up
            mean_value += ffn.activation(gate).float() / steps  # ∂/∂up
        return lambda p: ((p @ w_in) * mean_slope[:, :, None] + (p @ w_up) * mean_value[:, :, None]) @ w_out
    for a in alphas:
        mean_slope += _derivative(ffn.activation, a * (h @ w_in) + b_in) / steps
    return lambda p: ((p @ w_in) * mean_slope[:, :, None]) @ w_out


def _maps(record: LayerRecord, steps: int, memory_budget: int, whole_layer: bool) -> Tensor:
    if record.ffn is None:
        raise ValueError("ffn_map needs the FFN's parts: request it through context_mixing (which records them).")
    if record.form.layout == "parallel" or record.form.cross_attention:
        raise InvalidInputError(
            f"ffn_map carries the attention block's decomposition through the FFN; this model's {record.stack} "
            f"blocks are {record.form.describe()}: the FFN reads the block input (or the view is a cross-attention), "
            "so it mixes nothing the attention mixed."
        )
    integrated = _ffn_of_parts(record, steps)
    batch, n_queries, d_model = record.residual.shape
    n_keys = record.attention.alpha.shape[-1]
    d_ff = record.ffn.w_in.shape[-1]
    per_key = 4 * batch * n_queries * (3 * d_model + 2 * d_ff)
    keys_per_chunk = max(1, min(n_keys, memory_budget // per_key))
    out = torch.zeros(batch, n_queries, n_keys, dtype=torch.float32, device=record.residual.device)
    after = record.norms(("norm2",)) if record.form.layout == "post_ln" and whole_layer else ()
    totals = torch.zeros(batch, n_queries, d_model, dtype=torch.float32, device=record.residual.device)
    for start in range(0, n_keys, keys_per_chunk):
        keys = slice(start, min(start + keys_per_chunk, n_keys))
        h_parts = _ffn_input_parts(record, keys)
        f_parts = integrated(h_parts)
        totals += f_parts.sum(2)
        parts = h_parts + f_parts if whole_layer else f_parts
        for norm in after:  # post-LN: the layer output is the second norm of h + F
            parts = linear_part(norm, parts) * inverse_scale(norm)[:, :, None, None]
        out[:, :, keys] = parts.norm(dim=-1)
    _check_completeness(record, integrated, totals)
    return out


def _check_completeness(record: LayerRecord, integrated: Callable[[Tensor], Tensor], totals: Tensor) -> None:
    """Warn when the integrated gradients leave more than :data:`COMPLETENESS_WARNING` of the FFN unexplained:
    ``Σ_j F_{i←j} + IG(bias part) + FFN(0)`` against the real output."""
    ffn = record.ffn
    h = ffn.input.float()
    zero = torch.zeros(1, 1, h.shape[-1], dtype=h.dtype, device=h.device)
    hidden0 = ffn.activation(zero @ ffn.w_in.float() + (0 if ffn.b_in is None else ffn.b_in.float()))
    if ffn.is_gated:
        hidden0 = hidden0 * (0 if ffn.b_up is None else ffn.b_up.float())
    at_zero = hidden0 @ ffn.w_out.float() + (0 if ffn.b_out is None else ffn.b_out.float())
    rebuilt = totals + integrated(_bias_part(record)[:, :, None])[:, :, 0] + at_zero
    error = ((rebuilt - ffn.output.float()).norm(dim=-1) / ffn.output.float().norm(dim=-1).clamp_min(1e-12)).max()
    if float(error) > COMPLETENESS_WARNING:
        warnings.warn(
            f"ffn_map, layer {record.layer_idx}: the integrated gradients leave {float(error):.1%} of the FFN output "
            "unexplained; pass more steps (e.g. steps=128).",
            stacklevel=2,
        )


def _bias_part(record: LayerRecord) -> Tensor:
    """What of the FFN's input belongs to no token: the attention bias (and norm shifts) through the norm it reads."""
    parts = attention_parts(record)
    bias = parts.bias
    for norm in record.norms(record.form.norms_to("ffn_input")):
        bias = linear_part(norm, bias) * inverse_scale(norm)[..., None] + (
            0 if norm.bias is None else norm.bias.float()
        )
    return bias


def ffn_map(
    record: LayerRecord, *, steps: int = 32, memory_budget: int = DEFAULT_MEMORY_BUDGET
) -> Float[Tensor, "batch query key"]:
    """``‖F_{i←j}‖₂``: how much token j's share of the FFN's input reaches token i's FFN output (see the module).

    Args:
        record: One layer's record with the FFN's parts.
        steps: Midpoints of the integrated gradients (32, as the paper's default).
        memory_budget: Bytes one chunk of keys may use.

    Returns:
        Unnormalized norms ``[batch, query, key]``.
    """
    return _maps(record, steps, memory_budget, whole_layer=False)


def attention_ffn_map(
    record: LayerRecord, *, steps: int = 32, memory_budget: int = DEFAULT_MEMORY_BUDGET
) -> Float[Tensor, "batch query key"]:
    """The whole layer's map: the norms of the parts of the layer output, ``‖h_{i←j} + F_{i←j}‖₂`` (post-LN: through
    the second norm linearized at the real statistics).

    Args:
        record: One layer's record with the FFN's parts.
        steps: Midpoints of the integrated gradients.
        memory_budget: Bytes one chunk of keys may use.

    Returns:
        Unnormalized norms ``[batch, query, key]``.
    """
    return _maps(record, steps, memory_budget, whole_layer=True)
