"""Exactness on tiny random models of every family: the fast measures equal their definitions, and the per-token
parts add up to the modules' real outputs."""

from __future__ import annotations

import pytest
import torch
from transformers import PreTrainedModel

from inseq_mixing.extract import ADAPTERS

from .._helpers import LAYER_MEASURES, SUPPORTED_TINY_TYPES, collect_records, sample_inputs, tiny_model
from .._naive import (
    alti_bias,
    attention_added,
    attention_vectors,
    bias_through_norms,
    naive_measure,
    norms_to,
    output_bias,
    stream_after_attention,
    through_norms,
    with_residual,
)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-5) -> None:
    """``max|actual − expected| ≤ tol · max(1, max|expected|)``."""
    expected = expected.double()
    scale = max(1.0, expected.abs().max().item())
    assert (actual.double() - expected).abs().max().item() <= tol * scale


# Value zeroing's definition reruns the model: its brute-force test is in test_value_zeroing.py.
DEFINED_FROM_RECORD = sorted(set(LAYER_MEASURES) - {"value_zeroing"})


@pytest.mark.parametrize("name", DEFINED_FROM_RECORD)
def test_measure_equals_its_definition(model: PreTrainedModel, name: str) -> None:
    for record in collect_records(model, sample_inputs(model)):
        assert_close(LAYER_MEASURES[name](record), naive_measure(record, name))


@pytest.mark.parametrize("name", sorted(LAYER_MEASURES))
def test_measure_is_independent_of_memory_budget(model: PreTrainedModel, name: str) -> None:
    record = collect_records(model, sample_inputs(model))[0]
    assert_close(LAYER_MEASURES[name](record, memory_budget=1), LAYER_MEASURES[name](record), tol=1e-6)


def test_attention_vectors_sum_to_what_the_attention_adds(model: PreTrainedModel) -> None:
    for record in collect_records(model, sample_inputs(model)):
        rebuilt = attention_vectors(record).sum(2) + output_bias(record)
        assert_close(rebuilt, attention_added(record))


def test_residual_vectors_through_norm_sum_to_norm_output(model: PreTrainedModel) -> None:
    """+RES1+LN1: ``Σ_j t_ij + γ P b_O / σ + β`` is the output of the norm after the residual addition."""
    for record in collect_records(model, sample_inputs(model)):
        norms = norms_to(record, "ffn_input")
        r = with_residual(record, attention_vectors(record))
        if not norms:  # parallel blocks, or an FFN reading the stream unnormalized: the stream itself
            assert_close(r.sum(2) + output_bias(record), record.residual.double() + attention_added(record))
            continue
        bias = bias_through_norms(norms, output_bias(record))
        assert_close(through_norms(norms, r).sum(2) + bias, norms[-1].output)


def test_alti_resultant_is_the_real_output(model: PreTrainedModel) -> None:
    """ALTI's transformed vectors plus bias terms rebuild the norm-1 output (post-LN) or residual stream (pre-LN)."""
    for record in collect_records(model, sample_inputs(model)):
        r = with_residual(record, attention_vectors(record))
        transformed = through_norms(norms_to(record, "stream"), r)
        assert_close(transformed.sum(2) + alti_bias(record), stream_after_attention(record))


@pytest.mark.parametrize("model_type", [t for t in SUPPORTED_TINY_TYPES if ADAPTERS[t].is_causal])
def test_causal_models_have_no_future_contributions(model_type: str) -> None:
    model = tiny_model(model_type)
    for record in collect_records(model, sample_inputs(model)):
        for name, measure in LAYER_MEASURES.items():
            assert measure(record).triu(1).abs().max().item() == 0, name
