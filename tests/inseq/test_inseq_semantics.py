"""Our methods mean what inseq's own ``attention`` means: ``attribute_target``, token lists, and refused encoders."""

from __future__ import annotations

import functools

import inseq
import pytest
import torch

from inseq_mixing import context_mixing
from inseq_mixing.errors import UnsupportedArchitectureError
from inseq_mixing.inseq import INSEQ_METHODS, ROLLED_OUT_BY_DEFAULT
from inseq_mixing.measures import MEASURES

from .._tiny_models import ENCODER_TYPES, build_tiny_model, build_tokenizer
from .conftest import load, saved_model
from .test_encoder_decoder_methods import SOURCE, TARGET, encode

SEQ2SEQ = ("marian", "bart", "t5")
PROMPT, FORCED = "either you win the", "either you win the game or you"


@functools.cache
def inseq_attention(model_type: str, attribute_target: bool) -> inseq.FeatureAttributionOutput:
    """inseq's own ``attention`` method on the tiny model (the reference for every field but the scores)."""
    texts = (SOURCE, TARGET) if model_type in SEQ2SEQ else (PROMPT, FORCED)
    return load(model_type, "attention").attribute(*texts, attribute_target=attribute_target, show_progress=False)


def assert_same_fields(ours: inseq.FeatureAttributionOutput, reference: inseq.FeatureAttributionOutput) -> None:
    """Same tokens, positions, step scores and present attributions; same token dimensions (the first two: ours
    then have a layer dimension, inseq's attention a layer and a head dimension)."""
    assert ours.info["attribute_target"] == reference.info["attribute_target"]
    seq, ref = ours.sequence_attributions[0], reference.sequence_attributions[0]
    assert seq.source == ref.source and seq.target == ref.target
    assert (seq.attr_pos_start, seq.attr_pos_end) == (ref.attr_pos_start, ref.attr_pos_end)
    assert set(seq.step_scores or {}) == set(ref.step_scores or {})
    for field in ("source_attributions", "target_attributions"):
        scores, expected = getattr(seq, field), getattr(ref, field)
        assert (scores is None) == (expected is None), field
        if expected is not None:
            assert scores.shape[:2] == expected.shape[:2], field


@pytest.mark.parametrize("attribute_target", [False, True])
@pytest.mark.parametrize("method", [m for m in INSEQ_METHODS if "encoder-decoder" in MEASURES[m].kinds])
@pytest.mark.parametrize("model_type", SEQ2SEQ)
def test_encoder_decoder_fields_match_inseq_attention(model_type: str, method: str, attribute_target: bool) -> None:
    ours = load(model_type, method).attribute(SOURCE, TARGET, attribute_target=attribute_target, show_progress=False)
    assert_same_fields(ours, inseq_attention(model_type, attribute_target))


@pytest.mark.parametrize("method", ["alti", "attention_norm"])
@pytest.mark.parametrize("model_type", SEQ2SEQ)
def test_attribute_target_adds_the_target_rows_without_changing_the_source_rows(model_type: str, method: str) -> None:
    model = load(model_type, method)
    without = model.attribute(SOURCE, TARGET, show_progress=False).sequence_attributions[0]
    with_target = model.attribute(SOURCE, TARGET, attribute_target=True, show_progress=False).sequence_attributions[0]
    torch.testing.assert_close(without.source_attributions, with_target.source_attributions)
    for key in ("decoder_mixing", "encoder_mixing"):  # the full matrices come either way
        torch.testing.assert_close(without.sequence_scores[key], with_target.sequence_scores[key])
    source_ids, target_ids = encode(model, SOURCE), encode(model, TARGET, as_target=True)
    rolled = method in ROLLED_OUT_BY_DEFAULT
    mixing = context_mixing(model.model, source_ids, method, decoder_input_ids=target_ids, rollout=rolled)
    per_target = mixing.combined[0, ..., source_ids.shape[1] :] if rolled else mixing.decoder[0]
    for k, pos in enumerate(range(with_target.attr_pos_start, with_target.attr_pos_end)):
        torch.testing.assert_close(with_target.target_attributions[:pos, k, :], per_target[:, pos - 1, :pos].T)
        assert torch.isnan(with_target.target_attributions[pos:, k, :]).all()


def test_source_only_output_shows_and_aggregates() -> None:
    out = load("marian", "alti").attribute(SOURCE, TARGET, show_progress=False)
    aggregated = out.sequence_attributions[0].aggregate()
    assert aggregated.target_attributions is None
    assert "game" in out.show(display=False, return_html=True)


@pytest.mark.parametrize("attribute_target", [False, True])
def test_encoder_decoder_step_scores_equal_inseqs(attribute_target: bool) -> None:
    kwargs = {"attribute_target": attribute_target, "step_scores": ["probability"], "show_progress": False}
    ours = load("marian", "alti").attribute(SOURCE, TARGET, **kwargs).sequence_attributions[0]
    reference = load("marian", "dummy").attribute(SOURCE, TARGET, **kwargs).sequence_attributions[0]
    torch.testing.assert_close(ours.step_scores["probability"], reference.step_scores["probability"])


@pytest.mark.parametrize("attribute_target", [False, True])
@pytest.mark.parametrize("method", ["alti", "attention_norm"])
def test_decoder_only_attributes_prompt_and_generation_either_way(method: str, attribute_target: bool) -> None:
    model = load("gpt2", method)
    ours = model.attribute(PROMPT, FORCED, attribute_target=attribute_target, show_progress=False)
    assert_same_fields(ours, inseq_attention("gpt2", attribute_target))
    default = model.attribute(PROMPT, FORCED, show_progress=False).sequence_attributions[0]
    scores = ours.sequence_attributions[0].target_attributions
    torch.testing.assert_close(scores, default.target_attributions, equal_nan=True)


@pytest.mark.parametrize("model_type", ENCODER_TYPES)
def test_encoder_only_model_is_refused_at_load_pointing_to_context_mixing(model_type: str) -> None:
    model = build_tiny_model(model_type, head="masked_lm" if model_type == "bert" else "base")
    with pytest.raises(UnsupportedArchitectureError, match=r"encoder-only.*inseq_mixing\.context_mixing\(model"):
        inseq.load_model(model, "alti", tokenizer=build_tokenizer(None, template="bos_eos"))


@pytest.mark.parametrize("method", INSEQ_METHODS)
def test_encoder_loaded_from_a_path_is_refused_for_every_method(method: str) -> None:
    # inseq loads the folder with AutoModelForCausalLM, which gives BERT a (bidirectional) BertLMHeadModel
    with pytest.raises(UnsupportedArchitectureError, match=f"BertLMHeadModel.*context_mixing.*'{method}'"):
        inseq.load_model(str(saved_model("bert")), method)


def test_encoder_is_refused_when_switching_method_at_attribute() -> None:
    model = inseq.load_model(build_tiny_model("bert"), "attention", tokenizer=build_tokenizer(None, template="bos_eos"))
    with pytest.raises(UnsupportedArchitectureError, match="context_mixing"):
        model.attribute("the cat sat", method="globenc", show_progress=False)
