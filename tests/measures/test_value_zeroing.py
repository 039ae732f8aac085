"""Value zeroing: the exact shortcut equals rerunning the layer with a token's values zeroed."""

from __future__ import annotations

import pytest
import torch
from transformers import PreTrainedModel

from inseq_mixing import context_mixing
from inseq_mixing.extract import ADAPTERS
from inseq_mixing.measures import value_zeroing

from .._helpers import SUPPORTED_TINY_TYPES, collect_records, sample_inputs, tiny_model
from .._naive import brute_force_value_zeroing


def test_shortcut_equals_brute_force(model: PreTrainedModel) -> None:
    ids = sample_inputs(model, batch=1, seq=6)
    shortcut = context_mixing(model, ids, "value_zeroing", normalize=False)[0]
    for layer in range(shortcut.shape[0]):
        for token in range(ids.shape[1]):
            expected = brute_force_value_zeroing(model, ids, layer, token)[0]
            torch.testing.assert_close(shortcut[layer, :, token].double(), expected, atol=2e-6, rtol=0)


@pytest.mark.parametrize("model_type", ["gpt2", "bert"])
def test_head_subset_equals_brute_force(model_type: str) -> None:
    model = tiny_model(model_type)
    ids = sample_inputs(model, batch=1, seq=5)
    heads = {0: [1], 1: [0, 2]}
    shortcut = context_mixing(model, ids, "value_zeroing", normalize=False, heads=heads)[0]
    for layer, zeroed in heads.items():
        for token in range(ids.shape[1]):
            expected = brute_force_value_zeroing(model, ids, layer, token, heads=zeroed)[0]
            torch.testing.assert_close(shortcut[layer, :, token].double(), expected, atol=2e-6, rtol=0)


def test_layers_missing_from_a_head_mapping_are_not_zeroed() -> None:
    model = tiny_model("gpt2")
    scores = context_mixing(model, sample_inputs(model), "value_zeroing", normalize=False, heads={1: None})
    assert scores[:, 0].abs().max() == 0 and scores[:, 1].abs().max() > 0


def test_euclidean_distance() -> None:
    model = tiny_model("llama")
    ids = sample_inputs(model, batch=1, seq=5)
    for record in collect_records(model, ids):
        cos = value_zeroing(record)
        euclid = value_zeroing(record, similarity="euclidean")
        assert euclid.shape == cos.shape and (euclid >= 0).all()
        assert ((euclid > 0) == (cos.abs() > 1e-6)).float().mean() > 0.9
        # zeroing the token's own value changes its output by at least the attention it pays to itself
        assert (euclid.diagonal(dim1=1, dim2=2) > 0).all()


def test_zero_below_sets_small_raw_scores_to_zero() -> None:
    model = tiny_model("bert")
    ids = sample_inputs(model, batch=1)
    raw = context_mixing(model, ids, "value_zeroing", normalize=False)
    threshold = raw.median().item()
    clipped = context_mixing(model, ids, "value_zeroing", normalize=False, zero_below=threshold)
    torch.testing.assert_close(clipped, torch.where(raw < threshold, torch.zeros_like(raw), raw))


@pytest.mark.parametrize("model_type", [t for t in SUPPORTED_TINY_TYPES if ADAPTERS[t].final_norm])
def test_final_norm_option_compares_the_last_layer_after_the_final_norm(model_type: str) -> None:
    model = tiny_model(model_type)
    ids = sample_inputs(model, batch=1, seq=5)
    records = collect_records(model, ids)
    last = records[-1]
    plain = value_zeroing(last)
    normed = value_zeroing(last, final_norm_on_last_layer=True)
    assert not torch.allclose(plain, normed)
    torch.testing.assert_close(value_zeroing(records[0], final_norm_on_last_layer=True), value_zeroing(records[0]))


def test_unknown_similarity_is_rejected() -> None:
    record = collect_records(tiny_model("gpt2"), sample_inputs(tiny_model("gpt2")))[0]
    with pytest.raises(ValueError, match="'manhattan'"):
        value_zeroing(record, similarity="manhattan")
