"""The FFN recorded part by part: every family's record rebuilds the FFN exactly, and a wrong declaration is caught."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import inseq_mixing.extract as extract
from inseq_mixing import DecompositionError, ExtractionError
from inseq_mixing.extract import ADAPTERS, EncoderDecoderAdapter, get_adapter, recording

from .._helpers import sample_inputs
from .._tiny_models import TINY_CONFIGS, build_tiny_model

VARIANTS = {
    "gpt_neox-sequential": ("gpt_neox", {"use_parallel_residual": False}),
    "stablelm-parallel": ("stablelm", {"use_parallel_residual": True}),
    "opt-post-ln": ("opt", {"do_layer_norm_before": False}),
    "falcon-new-architecture": ("falcon", {"new_decoder_architecture": True, "num_kv_heads": 2}),
    "t5-gated": ("t5", {"feed_forward_proj": "gated-gelu", "is_gated_act": True, "dense_act_fn": "gelu_new"}),
}
CASES = {**{t: (t, {}) for t in sorted(t for t in ADAPTERS if t in TINY_CONFIGS)}, **VARIANTS}


def ffn_records(model_type: str, overrides: dict) -> list:
    model = build_tiny_model(model_type, **overrides)
    kwargs = {"input_ids": sample_inputs(model, batch=2, seq=6)}
    if isinstance(get_adapter(model), EncoderDecoderAdapter):
        kwargs.update(decoder_input_ids=sample_inputs(model, batch=2, seq=4, seed=1), use_cache=False)
    records = []
    with recording(model, get_adapter(model), records.append, record_ffn=True):
        model.base_model(**kwargs)
    return records


@pytest.mark.parametrize("case", sorted(CASES))
def test_recorded_parts_rebuild_the_ffn(case: str) -> None:
    """Independently of the extraction's own checks: in float64, ``(f(h W_in + b_in) ⊙ g) W_out + b_out`` equals
    the FFN's output, and the activation applied to the recorded pre-activation gives the recorded activation."""
    records = ffn_records(*CASES[case])
    with_ffn = [r for r in records if r.ffn is not None]
    assert with_ffn and all(r.ffn is not None for r in records if r.stack != "decoder")
    for record in with_ffn:
        ffn = record.ffn
        h = ffn.input.double()

        def linear(x, w, b):
            return x @ w.double() + (0 if b is None else b.double())

        u = linear(h, ffn.w_in, ffn.b_in)
        torch.testing.assert_close(u, ffn.pre_activation.double(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(ffn.activation(ffn.pre_activation).double(), ffn.activated.double())
        hidden = ffn.activated.double()
        if ffn.is_gated:
            hidden = hidden * linear(h, ffn.w_up, ffn.b_up)
        torch.testing.assert_close(linear(hidden, ffn.w_out, ffn.b_out), record.ffn_output.double(), atol=1e-5,
                                   rtol=1e-5)  # fmt: skip


@pytest.mark.parametrize("case", ["llama", "phi3", "t5-gated"])
def test_gated_ffns_are_recorded_as_gated(case: str) -> None:
    assert all(r.ffn.is_gated for r in ffn_records(*CASES[case]) if r.ffn is not None)


def test_swapped_gate_and_up_projections_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_tiny_model("llama")
    parts = ADAPTERS["llama"].ffn_parts
    swapped = dataclasses.replace(parts, gate=parts.up, up=parts.gate)
    monkeypatch.setitem(extract.ADAPTERS, "llama", dataclasses.replace(ADAPTERS["llama"], ffn_parts=swapped))
    caught = pytest.raises(DecompositionError, match=r"LlamaModel, layer 0: check 'FFN activation input = gate")
    with caught, recording(model, get_adapter(model), lambda record: None, record_ffn=True):
        model.base_model(input_ids=sample_inputs(model))


def test_a_second_projection_of_the_wrong_width_is_a_structural_error(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build_tiny_model("gpt2")
    wrong = dataclasses.replace(ADAPTERS["gpt2"].ffn_parts, out="attn.c_proj")  # d_model -> d_model, not d_ff
    monkeypatch.setitem(extract.ADAPTERS, "gpt2", dataclasses.replace(ADAPTERS["gpt2"], ffn_parts=wrong))
    caught = pytest.raises(ExtractionError, match=r"GPT2Model, block 0: the FFN's 'out' projection reads 32")
    with caught, recording(model, get_adapter(model), lambda record: None, record_ffn=True):
        model.base_model(input_ids=sample_inputs(model))
