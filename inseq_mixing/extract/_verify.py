"""Exactness checks: the recorded per-token parts must reproduce what the modules really computed."""

from __future__ import annotations

import functools

import torch
from torch import Tensor

from ..errors import DecompositionError
from ..norms import bias_or_zero, linearized
from ..record import AttentionRecord, HeadRecord, LayerRecord, NormRecord, lowest_precision

FP32_TOLERANCE = 1e-5
"""Largest error accepted in float32, relative to ``max(1, max|reference|)``."""

HALF_TOLERANCE = {torch.float16: 5e-3, torch.bfloat16: 4e-2}
"""Relative tolerances for half-precision models (the model computes in half, the check in float32)."""


def tolerance_for(dtype: torch.dtype) -> float:
    """The check tolerance for a block whose lowest precision is ``dtype`` (see ``LayerRecord.compute_dtype``)."""
    return HALF_TOLERANCE.get(dtype, FP32_TOLERANCE)


def relative_error(candidate: Tensor, reference: Tensor) -> float:
    """``max|candidate − reference| / max(1, max|reference|)``, computed in float32."""
    if not reference.numel():
        return 0.0
    reference = reference.float()
    difference = (candidate.float() - reference).abs_().max()
    return (difference / reference.abs().max().clamp_min(1.0)).item()


SKETCH_DIRECTIONS = 8
"""How many fixed random directions the attention-output check projects on."""


@functools.cache
def sketch_directions(d_model: int, device: torch.device) -> Tensor:
    """``SKETCH_DIRECTIONS`` fixed unit vectors with random ±1/√d entries (seeded: every run checks the same ones)."""
    generator = torch.Generator().manual_seed(0)
    signs = torch.randint(0, 2, (d_model, SKETCH_DIRECTIONS), generator=generator).float() * 2 - 1
    return (signs / d_model**0.5).to(device)


def attention_sum_sketch(attention: AttentionRecord, directions: Tensor) -> Tensor:
    """``(Σ_h α^h v^h W_O^h + b_O) U``: the attention output rebuilt from its per-head parts, projected on ``U``.

    Projecting ``W_O`` first costs ``H·n²·r`` multiply-adds for ``r`` directions instead of the ``n²·d + n·d²`` of
    rebuilding the output (a Freivalds-style check): a decomposition error passes only if it is orthogonal to all
    ``r`` random directions.
    """
    w_o_her = torch.einsum("hed,dr->her", attention.w_o.float(), directions)
    values_bhkr = torch.einsum("bhke,her->bhkr", attention.values.float(), w_o_her)
    # [r, key] @ [key, query] keeps the long dimension in the product's output (fast for few directions).
    out_bqr = (values_bhkr.transpose(-1, -2) @ attention.alpha.float().transpose(-1, -2)).sum(1).transpose(-1, -2)
    if attention.b_o is not None:
        out_bqr = out_bqr + attention.b_o.float() @ directions
    return out_bqr


def norm_output(norm: NormRecord) -> Tensor:
    """The norm's output rebuilt from its linearization: ``linearized(y) + β``."""
    return linearized(norm, norm.input) + bias_or_zero(norm, norm.input)


def layer_checks(record: LayerRecord) -> dict[str, tuple[Tensor, Tensor]]:
    """Every identity the decomposition relies on, as ``name -> (rebuilt, real)`` pairs."""
    attn_out = record.attention.output.float()
    directions = sketch_directions(attn_out.shape[-1], attn_out.device)
    checks = {
        f"attention output = Σ_h α^h v^h W_O^h + b_O (along {SKETCH_DIRECTIONS} random directions)": (
            attention_sum_sketch(record.attention, directions),
            attn_out @ directions,
        )
    }
    norms = {
        "norm1": record.norm1,
        "norm2": record.norm2,
        "post-attention norm": record.post_attention_norm,
        "post-FFN norm": record.post_ffn_norm,
    }
    for name, norm in norms.items():
        if norm is not None:
            checks[f"{name} output = linearized {name}"] = (norm_output(norm), norm.output)
    checks.update(record.form.stream_identities(record))
    attention = record.attention
    if attention.w_v is not None:
        rebuilt = torch.einsum("bkd,hde->bhke", attention.value_input.float(), attention.w_v.float())
        if attention.b_v is not None:
            rebuilt = rebuilt + attention.b_v.float()[None, :, None]
        checks["values = value input · W_V + b_V"] = (rebuilt, attention.values)
    if record.ffn is not None:
        checks.update(ffn_checks(record))
    return checks


def ffn_checks(record: LayerRecord) -> dict[str, tuple[Tensor, Tensor]]:
    """The FFN rebuilt from its recorded parts equals what the modules computed (projections along random
    directions, as for the attention)."""
    ffn = record.ffn
    h = ffn.input.float()
    d_ff, d_model = ffn.w_out.shape
    dir_f, dir_d = sketch_directions(d_ff, h.device), sketch_directions(d_model, h.device)

    def projected(x: Tensor, weight: Tensor, bias: Tensor | None, directions: Tensor) -> Tensor:
        out = x @ (weight.float() @ directions)
        return out if bias is None else out + bias.float() @ directions

    checks = {
        "FFN activation input = gate projection output": (ffn.activation_input, ffn.pre_activation),
        "FFN gate projection = h W_in + b_in": (
            projected(h, ffn.w_in, ffn.b_in, dir_f),
            ffn.pre_activation.float() @ dir_f,
        ),
        "FFN output = the block's FFN output": (ffn.output, record.ffn_output),
    }
    hidden = ffn.activated.float()
    if ffn.is_gated:
        checks["FFN up projection = h W_up + b_up"] = (projected(h, ffn.w_up, ffn.b_up, dir_f), ffn.up.float() @ dir_f)
        hidden = hidden * ffn.up.float()
    checks["FFN output = (f(u) ⊙ g) W_out + b_out"] = (projected(hidden, ffn.w_out, ffn.b_out, dir_d),
                                                      ffn.output.float() @ dir_d)  # fmt: skip
    return checks


def verify_layer(record: LayerRecord, model_class: str, tolerance: float) -> None:
    """Raise :class:`DecompositionError` naming the model class, layer and check if any identity fails."""
    for name, (rebuilt, real) in layer_checks(record).items():
        if rebuilt is real:  # the hooks saw the very same tensor
            continue
        error = relative_error(rebuilt, real)
        if not error <= tolerance:  # also catches NaN
            raise DecompositionError(model_class, record.layer_idx, name, error, tolerance)


def head_checks(head: HeadRecord) -> dict[str, tuple[Tensor, Tensor]]:
    """The head rebuilt from its recorded parts equals the model's output logits."""
    checks: dict[str, tuple[Tensor, Tensor]] = {}
    if head.final_norm is not None:
        checks["final norm output = linearized final norm"] = (norm_output(head.final_norm), head.final_norm.output)
    if head.output_weight is not None and head.logits is not None and head.logit_softcap:
        linear = head.hidden.float() @ head.output_weight.float().T
        if head.output_bias is not None:
            linear = linear + head.output_bias.float()
        cap = float(head.logit_softcap)
        checks["logits = softcap(hidden · unembedding)"] = (cap * torch.tanh(linear / cap), head.logits)
    elif head.output_weight is not None and head.logits is not None:
        directions = sketch_directions(head.output_weight.shape[0], head.hidden.device)
        rebuilt = head.hidden.float() @ (head.output_weight.float().T @ directions)
        if head.output_bias is not None:
            rebuilt = rebuilt + head.output_bias.float() @ directions
        checks[f"logits = hidden · unembedding (along {SKETCH_DIRECTIONS} random directions)"] = (
            rebuilt, head.logits.float() @ directions,
        )  # fmt: skip
    steps = head.classifier
    if steps:
        reads = head.hidden[:, head.classifier_position].float()
        checks["classifier reads its token's hidden state"] = (reads, steps[0].input)
        for idx, step in enumerate(steps):
            rebuilt = step.input.float() @ step.weight.float()
            checks[f"classifier step {idx} = input · W + b"] = (
                rebuilt if step.bias is None else rebuilt + step.bias.float(), step.pre_activation,
            )  # fmt: skip
            if idx + 1 < len(steps):
                activated = step.pre_activation if step.activation is None else step.activation(step.pre_activation)
                checks[f"classifier step {idx + 1} input = activation of step {idx}"] = (
                    activated,
                    steps[idx + 1].input,
                )
        if head.logits is not None:
            checks["logits = last classifier step"] = (steps[-1].pre_activation, head.logits)
    return checks


def verify_head(head: HeadRecord, model_class: str, layer_idx: int) -> None:
    """Raise :class:`DecompositionError` naming the model class and the check if the head does not add up."""
    dtypes = [head.hidden.dtype] + [step.pre_activation.dtype for step in head.classifier]
    tolerance = tolerance_for(lowest_precision(dtypes))
    for name, (rebuilt, real) in head_checks(head).items():
        if rebuilt is real:
            continue
        error = relative_error(rebuilt, real)
        if not error <= tolerance:
            raise DecompositionError(model_class, layer_idx, f"head: {name}", error, tolerance)
