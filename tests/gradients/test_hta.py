"""HTA: equal to Frobenius norms of Jacobians computed by reverse mode, the estimator's error bars, padding."""

from __future__ import annotations

import pytest
import torch

from inseq_mixing import InvalidInputError, context_mixing
from inseq_mixing.extract import blocks_of, get_adapter
from inseq_mixing.gradients import hidden_token_attribution
from inseq_mixing.inputs import prepare_inputs

from .._helpers import sample_inputs, tiny_model


def reverse_mode_hta(model, ids: torch.Tensor) -> torch.Tensor:
    """``‖∂e^l_i/∂x_j‖_F`` ``[layer, query, key]`` of one unpadded sequence from the full Jacobian (reverse mode)."""
    blocks = blocks_of(model)
    first: list[torch.Tensor] = []
    handle = blocks[0].register_forward_pre_hook(lambda m, a, k: first.append(a[0] if a else k["hidden_states"]),
                                                 with_kwargs=True)  # fmt: skip
    with torch.no_grad():
        model.base_model(input_ids=ids)
    handle.remove()

    def outputs(x: torch.Tensor) -> torch.Tensor:
        seen: list[torch.Tensor] = []

        def substitute(module, args, kwargs):
            return ((x, *args[1:]), kwargs) if args else (args, {**kwargs, "hidden_states": x})

        handles = [blocks[0].register_forward_pre_hook(substitute, with_kwargs=True)]
        handles += [b.register_forward_hook(lambda m, a, o: seen.append(o[0] if isinstance(o, tuple) else o))
                    for b in blocks]  # fmt: skip
        try:
            model.base_model(input_ids=ids)
        finally:
            for h in handles:
                h.remove()
        return torch.stack(seen)  # [layer, 1, seq, d]

    jacobian = torch.autograd.functional.jacobian(outputs, first[0])  # [layer, 1, seq, d, 1, seq, d]
    return jacobian[:, 0, :, :, 0].pow(2).sum((2, 4)).sqrt()


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "bert", "bloom", "gpt_neox"])
def test_exact_hta_equals_the_jacobian_norms(model_type: str) -> None:
    model = tiny_model(model_type).double().eval()
    try:
        ids = sample_inputs(model, batch=1, seq=5)
        raw = context_mixing(model, ids, "hta", normalize=False)
        expected = reverse_mode_hta(model, ids)
        torch.testing.assert_close(raw[0], expected, atol=1e-10, rtol=1e-6)  # RoPE tables stay float32
        normalized = context_mixing(model, ids, "hta")
        torch.testing.assert_close(normalized[0], expected / expected.sum(-1, keepdim=True), atol=1e-10, rtol=1e-6)
    finally:
        model.float()


def test_hta_of_a_causal_model_is_zero_above_the_diagonal() -> None:
    model = tiny_model("qwen2")
    mixing = context_mixing(model, sample_inputs(model, batch=1, seq=6), "hta")
    assert mixing.triu(1).abs().max() == 0
    torch.testing.assert_close(mixing.sum(-1), torch.ones(mixing.shape[:-1]))


@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_equals_each_sequence_alone(side: str) -> None:
    model = tiny_model("gpt2" if side == "left" else "bert")
    ids = sample_inputs(model, batch=2, seq=6)
    mask = torch.ones_like(ids)
    real = slice(2, None) if side == "left" else slice(None, 4)
    pads = slice(None, 2) if side == "left" else slice(4, None)
    mask[1, pads] = 0
    batched = context_mixing(model, ids, "hta", attention_mask=mask)
    alone = context_mixing(model, ids[1:, real], "hta")
    torch.testing.assert_close(batched[1][:, real, real], alone[0], atol=1e-5, rtol=1e-5)
    assert batched[1][:, pads].abs().max() == 0 and batched[1][:, :, pads].abs().max() == 0


def test_the_estimate_is_unbiased_with_honest_error_bars() -> None:
    model = tiny_model("llama").double().eval()
    try:
        ids = sample_inputs(model, batch=1, seq=5)
        inputs = prepare_inputs(model, get_adapter(model), ids, None)
        exact = hidden_token_attribution(model, inputs).squared_norms
        few = hidden_token_attribution(model, inputs, samples=16, seed=1)
        many = hidden_token_attribution(model, inputs, samples=256, seed=2)
    finally:
        model.float()
    causal = torch.ones(5, 5, dtype=torch.bool).tril().expand_as(exact[0])[None]
    for estimate, coverage in ((few, 0.9), (many, 0.95)):
        z = (estimate.squared_norms - exact)[causal] / estimate.stderr[causal]
        assert (z.abs() < 3).float().mean() >= coverage, z  # the standard errors cover the exact values
        assert 0.25 < z.pow(2).mean() < 4, z  # ... and are of the right size
        assert z.mean().abs() < 1, z  # no systematic bias
    ratio = (many.stderr[causal] / few.stderr[causal]).median()
    assert 0.15 < ratio < 0.4  # error bars shrink as 1/sqrt(samples): sqrt(16/256) = 0.25
    relative = ((many.squared_norms - exact).abs() / exact)[causal]
    assert relative.median() < 0.1


def test_the_estimate_is_reproducible_and_reaches_context_mixing() -> None:
    model = tiny_model("gpt2")
    ids = sample_inputs(model, batch=1, seq=4)
    one = context_mixing(model, ids, "hta", samples=8, seed=3)
    torch.testing.assert_close(one, context_mixing(model, ids, "hta", samples=8, seed=3), atol=0, rtol=0)
    assert not torch.equal(one, context_mixing(model, ids, "hta", samples=8, seed=4))


def test_a_tiny_memory_budget_gives_the_same_numbers() -> None:
    model = tiny_model("bert")
    ids = sample_inputs(model, batch=1, seq=4)
    torch.testing.assert_close(
        context_mixing(model, ids, "hta", memory_budget=1), context_mixing(model, ids, "hta"), atol=1e-6, rtol=1e-5
    )


def test_bad_options_and_model_kinds_get_clear_errors() -> None:
    model = tiny_model("gpt2")
    ids = sample_inputs(model, batch=1, seq=4)
    with pytest.raises(InvalidInputError, match="samples must be an integer >= 2"):
        context_mixing(model, ids, "hta", samples=1)
    with pytest.raises(InvalidInputError, match="maps already carry every layer"):
        context_mixing(model, ids, "hta", rollout=True)
    seq2seq = tiny_model("bart")
    with pytest.raises(InvalidInputError, match="hta supports decoder, encoder models"):
        context_mixing(seq2seq, ids, "hta", decoder_input_ids=ids[:, :2])


def test_hooks_are_removed_also_after_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model("gpt2")
    counts = [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()]
    block = blocks_of(model)[1]
    monkeypatch.setattr(block.mlp, "forward", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        context_mixing(model, sample_inputs(model, batch=1, seq=3), "hta")
    monkeypatch.undo()
    assert [(len(m._forward_hooks), len(m._forward_pre_hooks)) for m in model.modules()] == counts
