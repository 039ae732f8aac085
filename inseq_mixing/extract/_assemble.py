"""Assembly: a block's recorded slots and resolved modules become a plain :class:`LayerRecord` of tensors."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ExtractionError, OffloadedWeightsError
from ..record import AttentionRecord, FFNRecord, LayerRecord, NormRecord, RestOfBlock
from ._modules import input_output_weight, output_projection_per_head
from ._recorder import BlockRecorder


def required_slots(recorder: BlockRecorder) -> set[str]:
    """The slots every hook of ``recorder`` must have filled by the end of its block."""
    recorded_norms = {"norm1" if m is recorder.norm1 else name for name, m in recorder.norms.items()}
    expected = {"residual", "alpha", "values", "attention_output", "ffn_output", "output"}
    expected |= {f"{name}_{side}" for name in recorded_norms for side in ("input", "output")}
    if recorder.ffn_parts is not None:
        expected |= {"value_input", "ffn_input", "ffn_gate", "ffn_act_input", "ffn_activated", "ffn_out"}
        expected |= {"ffn_up"} if recorder.ffn_parts.up is not None else set()
    return expected


def assemble(
    recorder: BlockRecorder,
    slots: dict[str, Tensor],
    head_mix: Tensor | None,
    rest_of_block: RestOfBlock | None,
) -> LayerRecord:
    """The record of one block view (weights detached, any head intervention folded into ``W_O``).

    Raises:
        ExtractionError: If a part the adapter names was never recorded, or the heads do not divide the widths.
    """
    missing = required_slots(recorder) - {name for name, value in slots.items() if value is not None}
    if missing:
        raise ExtractionError(
            f"{recorder.where}: the block ran but these parts were never recorded: {', '.join(sorted(missing))}. "
            "The modules the adapter names for them are not called by this block's forward; fix those fields."
        )
    adapter = recorder.adapter
    alpha = slots["alpha"]
    n_heads = alpha.shape[1]
    w_o, b_o = output_projection(recorder, n_heads, head_mix)
    d_head = w_o.shape[1]
    values = slots["values"]
    if adapter.value_split is not None:
        values = adapter.value_split(values, n_heads, d_head)
        values = values.reshape(*values.shape[:2], -1)
    w_v = b_v = None
    if recorder.ffn_parts is not None:
        w_v, b_v = value_weights(recorder, n_heads, d_head)
    return LayerRecord(
        layer_idx=recorder.layer_idx,
        form=adapter.form,
        residual=slots["residual"],
        attention=AttentionRecord(
            alpha=alpha,
            values=per_head(recorder, values, n_heads, d_head),
            w_o=w_o,
            b_o=b_o,
            output=slots["attention_output"],
            w_v=w_v,
            b_v=b_v,
            value_input=slots.get("value_input") if w_v is not None else None,
        ),
        norm1=norm_record(recorder, slots, "norm1"),
        norm2=norm_record(recorder, slots, "norm2"),
        post_attention_norm=norm_record(recorder, slots, "post_attention_norm"),
        post_ffn_norm=norm_record(recorder, slots, "post_ffn_norm"),
        ffn_output=slots["ffn_output"],
        output=slots["output"],
        rest_of_block=rest_of_block,
        is_last=recorder.is_last,
        stack=recorder.stack,
        ffn=ffn_record(recorder, slots) if recorder.ffn_parts is not None else None,
    )


def value_weights(recorder: BlockRecorder, n_heads: int, d_head: int) -> tuple[Tensor, Tensor | None]:
    """The value projection as ``[head, d_in, d_head]`` per query head and its bias ``[head, d_head]``.

    A fused q/k/v projection's value part is cut out of its weight with the adapter's ``value_split`` (which slices
    the output dimension, so it applies to the weight's columns as to the output's).
    """
    weight, bias = linear_weights(recorder, recorder.value, "value")
    split = recorder.adapter.value_split
    if split is not None:
        weight = split(weight[None], n_heads, d_head).reshape(weight.shape[0], -1)
        bias = None if bias is None else split(bias[None, None], n_heads, d_head).reshape(-1)
    w_v = per_head(recorder, weight[None], n_heads, d_head)[0]  # [head, d_in, d_head]
    b_v = None if bias is None else per_head(recorder, bias[None, None], n_heads, d_head)[0, :, 0]
    return w_v, b_v


def norm_record(recorder: BlockRecorder, slots: dict[str, Tensor], slot: str) -> NormRecord | None:
    """One of the block's norms with the true vectors it normalized (``None`` if the block has none there)."""
    module = recorder.norms.get(slot)
    if module is None:
        return None
    prefix = "norm1" if slot == "norm2" and module is recorder.norm1 else slot
    adapter = recorder.adapter
    weight = _detached(getattr(module, "weight", None))
    if weight is not None and adapter.norm_weight_offset:
        weight = weight + adapter.norm_weight_offset
    return NormRecord(
        kind=adapter.norm_kind,
        weight=weight,
        bias=_detached(getattr(module, "bias", None)),
        eps=float(getattr(module, adapter.norm_eps_attr)),
        input=slots[f"{prefix}_input"],
        output=slots[f"{prefix}_output"],
    )


def output_projection(recorder: BlockRecorder, n_heads: int, head_mix: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """Per-head output projection rows, detached, with the head-mixing matrix folded in (``extract/heads.py``)."""
    w_o, b_o = output_projection_per_head(recorder.output_proj, n_heads)
    if w_o.is_meta:
        raise OffloadedWeightsError(recorder.model_class, recorder.layer_idx)
    w_o, b_o = w_o.detach(), _detached(b_o)  # records never carry autograd graphs
    if head_mix is not None:
        w_o = torch.einsum("hg,hed->ged", head_mix.to(w_o.device, w_o.dtype), w_o)
    return w_o, b_o


def per_head(recorder: BlockRecorder, projected: Tensor, n_heads: int, d_head: int) -> Tensor:
    """``[batch, seq, kv_heads·d_head]`` → ``[batch, heads, seq, d_head]``, key/value heads repeated."""
    batch, seq, width = projected.shape
    n_kv_heads = width // d_head
    if n_kv_heads * d_head != width or n_heads % n_kv_heads:
        raise ExtractionError(
            f"{recorder.where}: a projection of width {width} does not split into key/value heads of size {d_head} "
            f"for {n_heads} query heads; check the adapter's 'value' (or 'value_split') and 'output_proj'."
        )
    heads = projected.reshape(batch, seq, n_kv_heads, d_head).transpose(1, 2)
    return heads.repeat_interleave(n_heads // n_kv_heads, dim=1) if n_kv_heads != n_heads else heads


def ffn_record(recorder: BlockRecorder, slots: dict[str, Tensor]) -> FFNRecord:
    """The FFN's parts: weights as ``[input, output]``, the model's own pre-activations and activations."""
    parts, modules = recorder.ffn_parts, recorder.ffn_modules
    w_in, b_in = linear_weights(recorder, modules["gate"], "gate")
    gate = slots["ffn_gate"]
    w_up = b_up = up = None
    if parts.fused_gate_up:
        half = gate.shape[-1] // 2
        gate, up = gate[..., :half], gate[..., half:]
        w_in, w_up = w_in[:, :half], w_in[:, half:]
        b_in, b_up = (None, None) if b_in is None else (b_in[:half], b_in[half:])
    elif parts.up is not None:
        w_up, b_up = linear_weights(recorder, modules["up"], "up")
        up = slots["ffn_up"]
    w_out, b_out = linear_weights(recorder, modules["out"], "out")
    for name, weight, width, of in (("gate", w_in, gate.shape[-1], "outputs"), ("out", w_out, gate.shape[-1], "reads")):
        if weight.shape[0 if of == "reads" else 1] != width:
            raise ExtractionError(
                f"{recorder.where}: the FFN's '{name}' projection {of} {weight.shape[0 if of == 'reads' else 1]} "
                f"features but the activation has {width}; fix the adapter's 'ffn_parts'."
            )
    return FFNRecord(
        input=slots["ffn_input"], w_in=w_in, b_in=b_in, pre_activation=gate, activation=modules["act"],
        activated=slots["ffn_activated"], w_up=w_up, b_up=b_up, up=up, w_out=w_out, b_out=b_out,
        output=slots["ffn_out"], activation_input=slots["ffn_act_input"],
    )  # fmt: skip


def linear_weights(recorder: BlockRecorder, module: nn.Module, name: str) -> tuple[Tensor, Tensor | None]:
    """A projection's weight as ``[input, output]`` and its bias, detached."""
    weight = input_output_weight(module)
    if weight is None:
        raise ExtractionError(
            f"{recorder.where}: the '{name}' projection is a {type(module).__name__}; expected nn.Linear or "
            "Conv1D (fix the adapter's 'ffn_parts' or 'value')."
        )
    if weight.is_meta:
        raise OffloadedWeightsError(recorder.model_class, recorder.layer_idx)
    return weight.detach(), _detached(getattr(module, "bias", None))


def _detached(tensor: Tensor | None) -> Tensor | None:
    return None if tensor is None else tensor.detach()
