"""The exactness checks catch small decomposition errors, including through the random-direction attention check."""

from __future__ import annotations

import dataclasses

import pytest

from inseq_mixing import DecompositionError
from inseq_mixing.extract._verify import FP32_TOLERANCE, verify_layer
from inseq_mixing.record import LayerRecord

from .._helpers import collect_records, sample_inputs, tiny_model


def first_record(model_type: str) -> LayerRecord:
    model = tiny_model(model_type)
    return collect_records(model, sample_inputs(model))[0]


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "bert"])
def test_true_record_passes(model_type: str) -> None:
    verify_layer(first_record(model_type), "Tiny", FP32_TOLERANCE)


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "bert"])
def test_one_value_entry_off_by_a_thousandth_is_caught(model_type: str) -> None:
    record = first_record(model_type)
    values = record.attention.values.clone()
    values[0, 0, 2, 1] += 1e-3 * values.abs().max()  # one head, one key, one coordinate
    broken = dataclasses.replace(record, attention=dataclasses.replace(record.attention, values=values))
    with pytest.raises(DecompositionError, match="attention output"):
        verify_layer(broken, "Tiny", FP32_TOLERANCE)


def test_one_attention_weight_moved_between_keys_is_caught() -> None:
    record = first_record("gpt2")
    alpha = record.attention.alpha.clone()
    moved = 1e-3
    alpha[1, 1, 5, 2] -= moved  # row sums are unchanged
    alpha[1, 1, 5, 3] += moved
    broken = dataclasses.replace(record, attention=dataclasses.replace(record.attention, alpha=alpha))
    with pytest.raises(DecompositionError, match="attention output"):
        verify_layer(broken, "Tiny", FP32_TOLERANCE)


def test_norm_weight_off_is_caught() -> None:
    record = first_record("llama")
    norm = record.norm2
    weight = norm.weight.clone()
    weight[3] *= 1.001
    broken = dataclasses.replace(record, norm2=dataclasses.replace(norm, weight=weight))
    with pytest.raises(DecompositionError, match="norm2"):
        verify_layer(broken, "Tiny", FP32_TOLERANCE)
