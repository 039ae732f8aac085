"""Our value_zeroing reproduces inseq 0.7.1's own numbers where inseq's implementation runs."""

from __future__ import annotations

import pytest
import torch
import transformers
from inseq.models.model_config import register_model_config

from .conftest import load

INSEQ_VZ_RUNS = int(transformers.__version__.split(".")[0]) < 5  # inseq's GPT-2 value zeroing fails on 5.x


@pytest.mark.required_in_expected_env("4.57")  # CI's 4.57 env must really run it
@pytest.mark.skipif(not INSEQ_VZ_RUNS, reason="inseq 0.7.1's value_zeroing cannot run on transformers 5 (see docs)")
def test_equals_inseq_value_zeroing_on_gpt2() -> None:
    # inseq's GPT-2 config names the value variable 'value'; the modeling code calls it 'value_states'.
    register_model_config(
        "GPT2LMHeadModel",
        {"self_attention_module": "attn", "value_vector": "value_states"},
        overwrite=True,
        allow_partial=True,
    )
    prompt, forced = "either you win the", "either you win the game or you"
    ours = load("gpt2", "value_zeroing").attribute(prompt, forced, show_progress=False)
    theirs = load("gpt2", "value_zeroing_inseq").attribute(prompt, forced, show_progress=False)
    ours_t = ours.sequence_attributions[0].target_attributions
    theirs_t = theirs.sequence_attributions[0].target_attributions
    assert ours_t.shape == theirs_t.shape
    assert torch.nan_to_num(theirs_t).abs().max() > 0.05  # informative: not all scores under inseq's threshold
    torch.testing.assert_close(ours_t, theirs_t, atol=1e-5, rtol=0, equal_nan=True)
