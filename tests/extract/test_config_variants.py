"""Model types whose block layout depends on the config: every variant is exact or clearly unsupported."""

from __future__ import annotations

import pytest
import torch

from inseq_mixing import UnsupportedArchitectureError, context_mixing

from .._helpers import LAYER_MEASURES, collect_records, sample_inputs
from .._naive import brute_force_value_zeroing, naive_measure
from .._tiny_models import build_tiny_model

VARIANTS = {
    "gpt_neox-sequential": ("gpt_neox", {"use_parallel_residual": False}),
    "stablelm-parallel": ("stablelm", {"use_parallel_residual": True}),
    "opt-post-ln": ("opt", {"do_layer_norm_before": False}),
    "falcon-multi-head": ("falcon", {"multi_query": False}),
    "falcon-new-architecture": ("falcon", {"new_decoder_architecture": True, "num_kv_heads": 2}),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_measures_equal_their_definitions(variant: str) -> None:
    model_type, overrides = VARIANTS[variant]
    model = build_tiny_model(model_type, **overrides)
    ids = sample_inputs(model, batch=2, seq=6)
    for record in collect_records(model, ids):
        for name in sorted(set(LAYER_MEASURES) - {"value_zeroing"}):
            expected = naive_measure(record, name)
            assert (LAYER_MEASURES[name](record).double() - expected).abs().max() <= 1e-5 * max(
                1.0, expected.abs().max()
            )


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variant_value_zeroing_equals_brute_force(variant: str) -> None:
    model_type, overrides = VARIANTS[variant]
    model = build_tiny_model(model_type, **overrides)
    ids = sample_inputs(model, batch=1, seq=5)
    scores = context_mixing(model, ids, "value_zeroing", normalize=False)[0]
    for token in range(ids.shape[1]):
        expected = brute_force_value_zeroing(model, ids, 1, token)[0]
        torch.testing.assert_close(scores[1, :, token].double(), expected, atol=2e-6, rtol=0)


@pytest.mark.parametrize(
    ("model_type", "overrides", "message"),
    [
        ("deberta-v2", {"conv_kernel_size": 3}, "conv_kernel_size=3"),
        ("falcon", {"parallel_attn": False}, "parallel_attn=False"),
    ],
)
def test_uncovered_layouts_raise_a_clear_error(model_type: str, overrides: dict, message: str) -> None:
    model = build_tiny_model(model_type, **overrides)
    with pytest.raises(UnsupportedArchitectureError, match=message):
        context_mixing(model, sample_inputs(model), "alti")
