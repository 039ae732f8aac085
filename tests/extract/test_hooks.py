"""Hooks and settings are always restored; broken decompositions and unknown models raise clear errors."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
from transformers import PreTrainedModel

import inseq_mixing.extract as extract
from inseq_mixing import DecompositionError, OffloadedWeightsError, UnsupportedArchitectureError, context_mixing
from inseq_mixing.extract import ADAPTERS, get_adapter, recording

from .._helpers import sample_inputs, tiny_model


def hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def attn_implementations(model: torch.nn.Module) -> list[str | None]:
    return [m.config._attn_implementation for m in model.modules() if hasattr(m, "config")]


def test_no_hook_left_and_settings_restored_after_success(model: PreTrainedModel) -> None:
    before, impl, training = hook_count(model), attn_implementations(model), model.training
    context_mixing(model, sample_inputs(model), "alti")
    assert hook_count(model) == before
    assert attn_implementations(model) == impl
    assert model.training == training


def test_no_hook_left_after_the_forward_raises(model: PreTrainedModel) -> None:
    before, impl = hook_count(model), attn_implementations(model)

    def explode(record: object) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), recording(model, get_adapter(model), explode):
        assert hook_count(model) > before
        model.base_model(input_ids=sample_inputs(model))
    assert hook_count(model) == before
    assert attn_implementations(model) == impl


def test_training_mode_is_restored(model: PreTrainedModel) -> None:
    model.train()
    try:
        with pytest.warns(UserWarning, match="training mode; context mixing is measured in eval mode"):
            context_mixing(model, sample_inputs(model), "attention")
        assert model.training
    finally:
        model.eval()


def test_unsupported_architecture_lists_the_supported_ones() -> None:
    from transformers import GPTNeoConfig, GPTNeoModel

    model = GPTNeoModel(GPTNeoConfig(num_layers=1, num_heads=2, hidden_size=8, attention_types=[[["global"], 1]]))
    with pytest.raises(UnsupportedArchitectureError, match="GPTNeoModel") as error:
        context_mixing(model, torch.tensor([[1, 2, 3]]), "alti")
    for model_type in ADAPTERS:
        assert model_type in str(error.value)


def test_wrong_adapter_raises_decomposition_error_naming_model_layer_and_check(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model("bert")
    broken = dataclasses.replace(ADAPTERS["bert"], norm_kind="rms")  # BERT's LayerNorm declared as RMSNorm
    monkeypatch.setitem(extract.ADAPTERS, "bert", broken)
    before = hook_count(model)
    with pytest.raises(DecompositionError) as error:
        context_mixing(model, sample_inputs(model), "alti")
    assert error.value.model_class == "BertModel"
    assert error.value.layer_idx == 0
    assert "norm1" in error.value.check
    assert "BertModel, layer 0" in str(error.value)
    assert hook_count(model) == before


def test_tampered_output_projection_is_detected(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model("gpt2")
    broken = dataclasses.replace(ADAPTERS["gpt2"], value_split=lambda fused, h, e: fused[..., h * e : 2 * h * e])
    monkeypatch.setitem(extract.ADAPTERS, "gpt2", broken)  # keys read as values
    with pytest.raises(DecompositionError, match="attention output"):
        context_mixing(model, sample_inputs(model), "attention_norm")


def test_offloaded_output_projection_raises_a_clear_error() -> None:
    model = copy.deepcopy(tiny_model("gpt2"))  # the cached model stays intact
    projection = model.h[1].attn.c_proj

    def offload(module: torch.nn.Module, args: object, output: object) -> None:  # what accelerate's offload leaves
        module.weight = torch.nn.Parameter(module.weight.to("meta"), requires_grad=False)

    handle = projection.register_forward_hook(offload)
    before = hook_count(model) - 1
    try:
        with pytest.raises(OffloadedWeightsError, match=r"GPT2Model, layer 1.*meta"):
            context_mixing(model, sample_inputs(model), "alti")
    finally:
        handle.remove()
    assert hook_count(model) == before
