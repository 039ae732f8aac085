"""The feed-forward map: integrated gradients complete, exact for a linear FFN, and a clear error where undefined."""

from __future__ import annotations

import pytest
import torch

from inseq_mixing import InvalidInputError, context_mixing
from inseq_mixing.extract import get_adapter, recording
from inseq_mixing.measures.ffn_map import _bias_part, _ffn_input_parts, _ffn_of_parts, ffn_map

from .._helpers import sample_inputs
from .._naive import attention_vectors, norms_to, through_norms, with_residual
from .._tiny_models import build_tiny_model


def ffn_records(model, ids):
    records = []
    with recording(model, get_adapter(model), records.append, record_ffn=True):
        model.base_model(input_ids=ids)
    return records


def completeness_error(record, steps: int) -> float:
    """``‖Σ_j F_{i←j} + IG(bias) + FFN(0) − FFN(h_i)‖ / ‖FFN(h_i)‖``, from the vectors themselves."""
    integrated = _ffn_of_parts(record, steps)
    n = record.residual.shape[1]
    parts = integrated(_ffn_input_parts(record, slice(0, n))).sum(2)
    ffn = record.ffn
    b_in = 0 if ffn.b_in is None else ffn.b_in
    hidden0 = ffn.activation(torch.zeros(1, 1, ffn.w_in.shape[0]) @ ffn.w_in + b_in)
    if ffn.is_gated:
        hidden0 = hidden0 * (0 if ffn.b_up is None else ffn.b_up)
    at_zero = hidden0 @ ffn.w_out + (0 if ffn.b_out is None else ffn.b_out)
    rebuilt = parts + integrated(_bias_part(record)[:, :, None])[:, :, 0] + at_zero
    return float(((rebuilt - ffn.output).norm(dim=-1) / ffn.output.norm(dim=-1)).max())


@pytest.mark.parametrize("model_type", ["bert", "gpt2", "llama", "gemma2"])
def test_integrated_gradients_are_complete(model_type: str) -> None:
    model = build_tiny_model(model_type)
    for record in ffn_records(model, sample_inputs(model, batch=2, seq=6)):
        coarse, fine = completeness_error(record, 2), completeness_error(record, 128)
        assert fine < 1e-3 and fine < coarse


def test_a_linear_ffn_is_decomposed_exactly() -> None:
    """With the identity as activation, ``F_{i←j} = (h_{i←j} W1) W2`` whatever the steps."""
    model = build_tiny_model("gpt2", activation_function="linear")
    ids = sample_inputs(model, batch=1, seq=5)
    maps = context_mixing(model, ids, "ffn_map", normalize=False, steps=1)[0]
    for record in ffn_records(model, ids):
        h = through_norms(norms_to(record, "ffn_input"), with_residual(record, attention_vectors(record)))[0]
        expected = ((h @ record.ffn.w_in.double()) @ record.ffn.w_out.double()).norm(dim=-1)
        torch.testing.assert_close(maps[record.layer_idx].double(), expected, atol=1e-5, rtol=1e-5)


def test_maps_are_normalized_masked_and_the_whole_layer_includes_the_residual() -> None:
    model = build_tiny_model("llama")
    ids = sample_inputs(model, batch=2, seq=6)
    mask = torch.ones_like(ids)
    mask[1, :2], ids[1, :2] = 0, 0
    maps = context_mixing(model, ids, ["ffn_map", "attention_ffn_map"], attention_mask=mask)
    for name, result in maps.items():
        torch.testing.assert_close(result[0].sum(-1), torch.ones(2, 6))
        assert result[1][:, :2].abs().max() == 0 and result[1][:, :, :2].abs().max() == 0, name
        assert result.triu(1).abs().max() == 0  # causal
    raw = context_mixing(model, ids[:1], "attention_ffn_map", normalize=False)[0]
    for record in ffn_records(model, ids[:1]):  # the whole layer: the FFN's input parts plus what the FFN makes of them
        h = _ffn_input_parts(record, slice(0, 6))
        whole = (h + _ffn_of_parts(record, 32)(h)).norm(dim=-1)[0]
        torch.testing.assert_close(raw[record.layer_idx], whole, atol=1e-5, rtol=1e-5)


def test_parallel_blocks_get_a_clear_error() -> None:
    model = build_tiny_model("phi")
    with pytest.raises(InvalidInputError, match=r"supports post_ln, pre_ln blocks; PhiModel's blocks are parallel"):
        context_mixing(model, sample_inputs(model), "ffn_map")


def test_the_record_needs_the_ffn() -> None:
    model = build_tiny_model("gpt2")
    records = []
    with recording(model, get_adapter(model), records.append):
        model.base_model(input_ids=sample_inputs(model))
    with pytest.raises(ValueError, match="needs the FFN's parts"):
        ffn_map(records[0])
