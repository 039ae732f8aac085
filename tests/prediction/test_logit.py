"""Logit and ALTI-Logit: golden numbers of the authors' code, a straightforward implementation, every decoder family."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import GPT2LMHeadModel

from inseq_mixing import DecompositionError, InvalidInputError, UnsupportedArchitectureError, attribute_prediction
from inseq_mixing.extract import ADAPTERS

from .._helpers import REFERENCE_DIR, sample_inputs
from .._tiny_models import CAUSAL_TYPES, build_tiny_model
from ._naive_logit import naive_logit

GOLDEN = REFERENCE_DIR / "alti_logit"
CASES = ("public_0", "public_1", "public_2")
METHODS = {"logit": "logit_per_layer", "alti_logit": "alti_logit_per_layer"}


@pytest.fixture(scope="module")
def golden_model() -> GPT2LMHeadModel:
    return GPT2LMHeadModel.from_pretrained(GOLDEN / "models" / "tiny-gpt2-seed11").eval()


@pytest.mark.parametrize("with_foil", [False, True], ids=["target", "target-foil"])
@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("case", CASES)
def test_matches_the_authors_code(golden_model, case: str, method: str, with_foil: bool) -> None:
    data = np.load(GOLDEN / f"tiny-gpt2-seed11__{case}.npz")
    sidecar = json.loads((GOLDEN / f"tiny-gpt2-seed11__{case}.json").read_text())
    suffix = "_diff" if with_foil else ""
    foil = int(data["foil"]) if with_foil else None
    ids = torch.tensor(data["input_ids"])[None]
    out = attribute_prediction(golden_model, ids, method, foil=foil, per_head=True)
    assert int(out.target) == int(data["target"]) == sidecar["target"]  # the default target is the argmax
    np.testing.assert_allclose(out.per_layer[0].numpy(), data[METHODS[method] + suffix], atol=1e-5, rtol=0)
    np.testing.assert_allclose(out.scores[0].numpy(), data[METHODS[method] + suffix].sum(0), atol=1e-5, rtol=0)
    n_layers = data["mlp"].shape[0]
    for name, key in (("mlp", "mlp"), ("attention_bias", "b_o")):
        got = [float(out.rest[f"{name}.{layer}"][0]) for layer in range(n_layers)]
        np.testing.assert_allclose(got, data[key + suffix], atol=1e-5, rtol=0)
    np.testing.assert_allclose(float(out.rest["embedding"][0]), data["init" + suffix], atol=1e-5)
    np.testing.assert_allclose(float(out.rest["output_bias"][0]), data["lnf_bias" + suffix], atol=1e-5)
    real = data["logits_real"][int(data["target"])] - (data["logits_real"][foil] if with_foil else 0)
    np.testing.assert_allclose(float(out.value[0]), real, atol=1e-5, rtol=0)
    assert float(out.identity_error().abs().max()) <= 1e-4 * max(1.0, abs(real))
    if method == "logit":  # per head: sums over heads to the layer's parts
        np.testing.assert_allclose(out.per_head[0].numpy(), data["logit_per_layer_head" + suffix], atol=1e-5, rtol=0)


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("model_type", ["gpt2", "llama", "qwen2"])
def test_equals_a_straightforward_implementation(model_type: str, method: str) -> None:
    model = build_tiny_model(model_type, head="causal_lm")
    ids = sample_inputs(model, batch=1, seq=7)
    foil = 7
    out = attribute_prediction(model, ids, method, position=4, foil=foil)
    naive = naive_logit(model, ids, 4, int(out.target[0]), foil, track=method == "alti_logit")
    torch.testing.assert_close(out.per_layer[0].double(), naive["per_layer"], atol=2e-5, rtol=1e-5)
    for name, value in naive["rest"].items():
        torch.testing.assert_close(out.rest[name][0].double(), value, atol=2e-5, rtol=1e-5)


LAYOUT_OK = [t for t in CAUSAL_TYPES if t in ADAPTERS]


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("model_type", LAYOUT_OK)
def test_scores_and_rest_add_up_on_every_decoder_family(model_type: str, method: str) -> None:
    model = build_tiny_model(model_type, head="causal_lm")
    ids = sample_inputs(model, batch=2, seq=6)
    out = attribute_prediction(model, ids, method, foil=5)
    assert out.scores.shape == (2, 6) and out.per_layer.shape == (2, model.config.num_hidden_layers, 6)
    assert (out.identity_error().abs() <= 1e-4 * out.value.abs().clamp_min(1)).all()


def test_post_ln_decoders_get_a_clear_error() -> None:
    model = build_tiny_model("opt", head="causal_lm", do_layer_norm_before=False)
    with pytest.raises(InvalidInputError, match=r"pre-LN or parallel blocks.*post-LN.*decompx"):
        attribute_prediction(model, sample_inputs(model), "alti_logit")


def test_padded_batch_equals_each_sequence_alone() -> None:
    model = build_tiny_model("llama", head="causal_lm")
    ids = sample_inputs(model, batch=2, seq=7)
    mask = torch.ones_like(ids)
    mask[1, :3], ids[1, :3] = 0, 0
    batched = attribute_prediction(model, ids, "alti_logit", attention_mask=mask, foil=6)
    alone = attribute_prediction(model, ids[1:, 3:], "alti_logit", foil=6)
    torch.testing.assert_close(batched.scores[1, 3:], alone.scores[0], atol=1e-5, rtol=1e-5)
    assert batched.scores[1, :3].abs().max() == 0
    torch.testing.assert_close(batched.value[1], alone.value[0], atol=1e-5, rtol=1e-5)


def test_every_position_in_one_pass_equals_one_call_per_position() -> None:
    model = build_tiny_model("gpt2", head="causal_lm")
    ids = sample_inputs(model, batch=1, seq=5)
    targets = sample_inputs(model, batch=1, seq=5, seed=3)
    every = attribute_prediction(model, ids, "alti_logit", position="all", target=targets)
    assert every.scores.shape == (1, 5, 5) and every.per_layer.shape == (1, 5, model.config.n_layer, 5)
    for t in range(5):
        one = attribute_prediction(model, ids, "alti_logit", position=t, target=targets[:, t])
        torch.testing.assert_close(every.scores[:, t], one.scores, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(every.value[:, t], one.value, atol=1e-5, rtol=1e-5)
        assert (every.scores[0, t, t + 1 :] == 0).all()  # the future does not contribute


def test_models_without_a_head_and_bad_targets_get_clear_errors() -> None:
    bare = build_tiny_model("gpt2")
    with pytest.raises(UnsupportedArchitectureError, match="AutoModelForCausalLM"):
        attribute_prediction(bare, sample_inputs(bare), "logit")
    model = build_tiny_model("gpt2", head="causal_lm")
    with pytest.raises(InvalidInputError, match="target holds outputs outside"):
        attribute_prediction(model, sample_inputs(model), "logit", target=10_000)
    with pytest.raises(InvalidInputError, match="position 99 is outside"):
        attribute_prediction(model, sample_inputs(model), "logit", position=99)


def test_a_wrong_decomposition_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    import inseq_mixing.measures.logit as logit

    model = build_tiny_model("gpt2", head="causal_lm")
    original = logit.LogitContributions._read
    monkeypatch.setattr(logit.LogitContributions, "_read", lambda self, v: 1.01 * original(self, v))
    with pytest.raises(DecompositionError, match=r"GPT2LMHeadModel, layer 1: check 'logit: scores \+ rest"):
        attribute_prediction(model, sample_inputs(model), "logit")
