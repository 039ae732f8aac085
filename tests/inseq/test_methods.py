"""Every context-mixing method through inseq: registration, values, one pass per batch, inseq's features."""

from __future__ import annotations

import inseq
import pytest
import torch
from inseq.attr.feat import FeatureAttribution

from inseq_mixing import context_mixing
from inseq_mixing.inseq import ATTRIBUTION_CLASSES, INSEQ_METHODS, ROLLED_OUT_BY_DEFAULT, RolloutMixingSequenceOutput

from .conftest import load

PROMPT = "either you win the"
# What the inseq methods use by default beyond context_mixing's defaults (value zeroing keeps inseq's behaviour).
INSEQ_DEFAULTS = {"value_zeroing": {"zero_below": 1e-5, "final_norm_on_last_layer": True}}
FORCED = "either you win the game or you"


def full_ids(model: inseq.models.AttributionModel, text: str) -> torch.Tensor:
    return model.tokenizer(text, return_tensors="pt").input_ids


def test_every_method_is_listed_and_resolves_to_our_class() -> None:
    assert set(INSEQ_METHODS) <= set(inseq.list_feature_attribution_methods())
    classes = FeatureAttribution.available_classes()
    for name in INSEQ_METHODS:
        assert classes[name] is ATTRIBUTION_CLASSES[name]


def test_names_do_not_collide_with_inseq_methods_except_value_zeroing_which_replaces_inseqs() -> None:
    inseq_own = {
        cls.method_name
        for cls in FeatureAttribution.subclasses()
        if cls.__module__.startswith("inseq.") and hasattr(cls, "method_name")
    }
    assert not inseq_own & set(INSEQ_METHODS)
    assert "value_zeroing_inseq" in inseq_own


def test_value_zeroing_deterministically_uses_our_implementation() -> None:
    from inseq.attr.feat import ValueZeroingAttribution

    model = load("gpt2", "value_zeroing")
    assert type(model.attribution_method) is ATTRIBUTION_CLASSES["value_zeroing"]
    assert FeatureAttribution.available_classes()["value_zeroing_inseq"] is ValueZeroingAttribution


@pytest.mark.parametrize("method", INSEQ_METHODS)
def test_step_rows_equal_context_mixing(inseq_model_type: str, method: str) -> None:
    model = load(inseq_model_type, method)
    out = model.attribute(PROMPT, FORCED, show_progress=False)
    seq = out.sequence_attributions[0]
    rollout = method in ROLLED_OUT_BY_DEFAULT
    options = INSEQ_DEFAULTS.get(method, {})
    expected = context_mixing(model.model, full_ids(model, FORCED), method, rollout=rollout, **options)[0]
    n_gen = seq.attr_pos_end - seq.attr_pos_start
    assert seq.target_attributions.shape == (len(seq.target), n_gen, expected.shape[0])
    for k in range(n_gen):
        pos = seq.attr_pos_start + k  # the step predicting token `pos` reads row pos - 1 over keys < pos
        torch.testing.assert_close(seq.target_attributions[:pos, k, :], expected[:, pos - 1, :pos].T)
        assert torch.isnan(seq.target_attributions[pos:, k, :]).all()
    torch.testing.assert_close(seq.sequence_scores["decoder_mixing"], expected.permute(2, 1, 0))


@pytest.mark.parametrize("method", sorted(ROLLED_OUT_BY_DEFAULT - {"attention_rollout"}))
def test_rollout_option_switches_to_layer_wise_scores(method: str) -> None:
    model = load("gpt2", method)
    out = model.attribute(PROMPT, FORCED, rollout=False, show_progress=False)
    seq = out.sequence_attributions[0]
    layerwise = context_mixing(model.model, full_ids(model, FORCED), method)[0]
    pos = seq.attr_pos_start
    torch.testing.assert_close(seq.target_attributions[:pos, 0, :], layerwise[:, pos - 1, :pos].T)
    assert type(seq) is not RolloutMixingSequenceOutput


@pytest.mark.parametrize("method", ["alti", "attention_norm_res_ln"])
def test_one_forward_serves_every_step_and_equals_step_by_step(inseq_model_type: str, method: str) -> None:
    model = load(inseq_model_type, method)
    calls = []
    handle = model.model.base_model.register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        out = model.attribute(PROMPT, FORCED, show_progress=False)
    finally:
        handle.remove()
    assert len(calls) == 1
    seq = out.sequence_attributions[0]
    ids = full_ids(model, FORCED)
    rollout = method in ROLLED_OUT_BY_DEFAULT
    for k, pos in enumerate(range(seq.attr_pos_start, seq.attr_pos_end)):
        step_alone = context_mixing(model.model, ids[:, :pos], method, rollout=rollout)[0, :, -1, :]
        torch.testing.assert_close(seq.target_attributions[:pos, k, :], step_alone.T)


def test_batch_equals_each_text_alone(inseq_model_type: str) -> None:
    model = load(inseq_model_type, "globenc")
    texts = ["either you win", "the cat sat on the"]
    generation = {"max_new_tokens": 4, "do_sample": False}
    batched = model.attribute(texts, generation_args=generation, show_progress=False)
    for text, seq in zip(texts, batched.sequence_attributions, strict=True):
        alone = model.attribute(text, generation_args=generation, show_progress=False).sequence_attributions[0]
        assert [t.token for t in seq.target] == [t.token for t in alone.target]
        torch.testing.assert_close(seq.target_attributions, alone.target_attributions, equal_nan=True)


def test_step_scores_come_alongside(inseq_model_type: str) -> None:
    model = load(inseq_model_type, "alti")
    out = model.attribute(PROMPT, FORCED, step_scores=["probability"], show_progress=False)
    reference = load(inseq_model_type, "dummy").attribute(
        PROMPT, FORCED, step_scores=["probability"], show_progress=False
    )
    torch.testing.assert_close(
        out.sequence_attributions[0].step_scores["probability"],
        reference.sequence_attributions[0].step_scores["probability"],
    )


def test_generation_with_max_new_tokens() -> None:
    model = load("llama", "alti")
    out = model.attribute(PROMPT, generation_args={"max_new_tokens": 5}, show_progress=False)
    seq = out.sequence_attributions[0]
    assert seq.attr_pos_end - seq.attr_pos_start == 5
    sums = torch.nansum(seq.target_attributions, dim=0)
    torch.testing.assert_close(sums, torch.ones_like(sums))


def test_default_aggregation_shows_the_last_rollout_layer_or_the_layer_mean() -> None:
    rolled = load("gpt2", "alti").attribute(PROMPT, FORCED, show_progress=False).sequence_attributions[0]
    torch.testing.assert_close(
        rolled.aggregate().target_attributions, rolled.target_attributions[..., -1], equal_nan=True
    )
    layerwise = load("gpt2", "attention_norm").attribute(PROMPT, FORCED, show_progress=False).sequence_attributions[0]
    mean = layerwise.target_attributions.mean(-1)
    torch.testing.assert_close(layerwise.aggregate().target_attributions, mean / torch.nansum(mean, 0), equal_nan=True)


def test_show_in_terminal_and_as_html(capsys: pytest.CaptureFixture[str]) -> None:
    out = load("gpt2", "alti").attribute(PROMPT, FORCED, show_progress=False)
    out.show()
    assert "game" in capsys.readouterr().out
    html = out.show(display=False, return_html=True)
    assert "<table" in html.lower() or "<div" in html.lower()
    assert "game" in html


def test_save_and_load_round_trip(tmp_path) -> None:
    out = load("qwen2", "alti").attribute(PROMPT, FORCED, show_progress=False)
    out.save(tmp_path / "out.json")
    loaded = inseq.FeatureAttributionOutput.load(tmp_path / "out.json")
    original, restored = out.sequence_attributions[0], loaded.sequence_attributions[0]
    assert type(restored) is RolloutMixingSequenceOutput
    assert loaded.info["attribution_method"] == "alti"
    torch.testing.assert_close(restored.target_attributions, original.target_attributions, equal_nan=True)
    torch.testing.assert_close(
        restored.aggregate().target_attributions, original.aggregate().target_attributions, equal_nan=True
    )
    loaded.show(display=False)


def test_inseq_span_aggregation() -> None:
    seq = load("gpt2", "alti").attribute(PROMPT, FORCED, show_progress=False).sequence_attributions[0]
    merged = seq.aggregate("spans", target_spans=[(0, 2)])
    assert merged.target_attributions.shape[0] == seq.target_attributions.shape[0] - 1
    torch.testing.assert_close(merged.target_attributions[1:], seq.target_attributions[2:], equal_nan=True)


def test_attribution_inside_ablate_heads_reflects_the_ablation() -> None:
    from inseq_mixing.heads import ablate_heads

    model = load("gpt2", "alti")
    base = model.attribute(PROMPT, FORCED, show_progress=False).sequence_attributions[0]
    with ablate_heads(model.model, {0: [0, 1], 1: [2]}):
        ablated = model.attribute(PROMPT, FORCED, show_progress=False).sequence_attributions[0]
        expected = context_mixing(model.model, full_ids(model, FORCED), "alti", rollout=True)[0]
    pos = ablated.attr_pos_start
    torch.testing.assert_close(ablated.target_attributions[:pos, 0, :], expected[:, pos - 1, :pos].T)
    assert (ablated.target_attributions - base.target_attributions).nan_to_num().abs().max() > 1e-3
