"""decompx, alti_logit, logit and grad_rollout through inseq: each step's scores are attribute_prediction's for that
step's token."""

from __future__ import annotations

import pytest
import torch

from inseq_mixing import UnsupportedArchitectureError, attribute_prediction

from .conftest import load

PROMPT, FORCED = "either you win the", "either you win the game or you"


@pytest.mark.parametrize("method", ["decompx", "alti_logit", "logit", "grad_rollout"])
def test_each_step_explains_its_own_token(method: str) -> None:
    model = load("gpt2", method)
    out = model.attribute(PROMPT, FORCED, show_progress=False, step_scores=["probability"])
    sequence = out.sequence_attributions[0]
    ids = model.encode(FORCED, as_targets=False).input_ids
    n_prompt = len(model.encode(PROMPT, as_targets=False).input_ids[0])
    assert "probability" in sequence.step_scores
    for step, token_position in enumerate(range(n_prompt, ids.shape[1])):
        expected = attribute_prediction(model.model, ids, method, position=token_position - 1,
                                        target=ids[:, token_position])  # fmt: skip
        got = sequence.target_attributions[:token_position, step]
        torch.testing.assert_close(got, expected.scores[0, :token_position], atol=1e-5, rtol=1e-5)


def test_a_foil_and_contrast_targets_explain_the_logit_difference() -> None:
    model = load("llama", "alti_logit")
    ids = model.encode(FORCED, as_targets=False).input_ids
    foil = 7
    out = model.attribute(PROMPT, FORCED, show_progress=False, attribution_args={"foil": foil})
    last = out.sequence_attributions[0].target_attributions[:, -1]
    expected = attribute_prediction(model.model, ids, "alti_logit", position=ids.shape[1] - 2,
                                    target=ids[:, -1], foil=foil)  # fmt: skip
    torch.testing.assert_close(last[: ids.shape[1] - 1], expected.scores[0, :-1], atol=1e-5, rtol=1e-5)
    contrast = "either you win the match or we"
    contrasted = model.attribute(PROMPT, FORCED, show_progress=False, attributed_fn="contrast_prob_diff",
                                 contrast_targets=contrast)  # fmt: skip
    contrast_ids = model.encode(contrast, as_targets=False).input_ids
    expected = attribute_prediction(model.model, ids, "alti_logit", position=ids.shape[1] - 2, target=ids[:, -1],
                                    foil=contrast_ids[:, -1])  # fmt: skip
    got = contrasted.sequence_attributions[0].target_attributions[: ids.shape[1] - 1, -1]
    torch.testing.assert_close(got, expected.scores[0, :-1], atol=1e-5, rtol=1e-5)


def test_encoder_decoders_are_refused() -> None:
    with pytest.raises(UnsupportedArchitectureError, match="decoder-only"):
        load("marian", "decompx")
