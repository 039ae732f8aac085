"""Exactness checks: the recorded per-token parts must reproduce what the modules really computed."""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import DecompositionError
from ..measures._norms import bias_or_zero, linearized
from ..record import AttentionRecord, LayerRecord, NormRecord

FP32_TOLERANCE = 1e-5
"""Largest error accepted in float32, relative to ``max(1, max|reference|)``."""

HALF_TOLERANCE = {torch.float16: 5e-3, torch.bfloat16: 4e-2}
"""Relative tolerances for half-precision models (the model computes in half, the check in float32)."""


def tolerance_for(dtype: torch.dtype) -> float:
    """The check tolerance for a model running in ``dtype``."""
    return HALF_TOLERANCE.get(dtype, FP32_TOLERANCE)


def relative_error(candidate: Tensor, reference: Tensor) -> float:
    """``max|candidate − reference| / max(1, max|reference|)``, computed in float32."""
    reference = reference.float()
    scale = max(1.0, reference.abs().max().item()) if reference.numel() else 1.0
    return (candidate.float() - reference).abs().max().item() / scale if reference.numel() else 0.0


def attention_sum(attention: AttentionRecord) -> Tensor:
    """``Σ_j z_ij + b_O = Σ_h α^h v^h W_O^h + b_O``, the attention output rebuilt from its per-head parts."""
    context_bhqe = torch.einsum("bhqk,bhke->bhqe", attention.alpha.float(), attention.values.float())
    out_bqd = torch.einsum("bhqe,hed->bqd", context_bhqe, attention.w_o.float())
    if attention.b_o is not None:
        out_bqd = out_bqd + attention.b_o.float()
    return out_bqd


def norm_output(norm: NormRecord) -> Tensor:
    """The norm's output rebuilt from its linearization: ``linearized(y) + β``."""
    return linearized(norm, norm.input) + bias_or_zero(norm, norm.input)


def layer_checks(record: LayerRecord) -> dict[str, tuple[Tensor, Tensor]]:
    """Every identity the decomposition relies on, as ``name -> (rebuilt, real)`` pairs."""
    attn_out = record.attention.output.float()
    ffn_out = record.ffn_output.float()
    x = record.residual.float()
    checks = {"attention output = Σ_h α^h v^h W_O^h + b_O": (attention_sum(record.attention), attn_out)}
    norms = {
        "norm1": record.norm1,
        "norm2": record.norm2,
        "post-attention norm": record.post_attention_norm,
        "post-FFN norm": record.post_ffn_norm,
    }
    for name, norm in norms.items():
        if norm is not None:
            checks[f"{name} output = linearized {name}"] = (norm_output(norm), norm.output)
    added_attention, added_ffn = attn_out, ffn_out  # what the residual additions add
    if record.post_attention_norm is not None:
        checks["post-attention norm input = attention output"] = (attn_out, record.post_attention_norm.input)
        added_attention = record.post_attention_norm.output.float()
    if record.post_ffn_norm is not None:
        checks["post-FFN norm input = FFN output"] = (ffn_out, record.post_ffn_norm.input)
        added_ffn = record.post_ffn_norm.output.float()
    if record.parallel or record.pre_norm:
        if record.norm1 is not None:
            checks["norm1 input = block input"] = (record.norm1.input, x)
        stream = x + added_attention
        if record.parallel:
            if record.norm2 is not None:
                checks["norm2 input = block input"] = (record.norm2.input, x)
            checks["block output = block input + attention output + FFN output"] = (stream + added_ffn, record.output)
        else:
            if record.norm2 is not None:
                checks["norm2 input = block input + attention output"] = (stream, record.norm2.input)
            checks["block output = stream after attention + FFN output"] = (stream + added_ffn, record.output)
    else:
        checks["norm1 input = block input + attention output"] = (x + added_attention, record.norm1.input)
        checks["norm2 input = norm1 output + FFN output"] = (
            record.norm1.output.float() + added_ffn,
            record.norm2.input,
        )
        checks["block output = norm2 output"] = (record.norm2.output, record.output)
    return checks


def verify_layer(record: LayerRecord, model_class: str, tolerance: float) -> None:
    """Raise :class:`DecompositionError` naming the model class, layer and check if any identity fails."""
    for name, (rebuilt, real) in layer_checks(record).items():
        error = relative_error(rebuilt, real)
        if not error <= tolerance:  # also catches NaN
            raise DecompositionError(model_class, record.layer_idx, name, error, tolerance)
