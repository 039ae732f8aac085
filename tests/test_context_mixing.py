"""The functional API on every supported family: layout, normalization, padding and errors."""

from __future__ import annotations

import pytest
import torch
from transformers import PreTrainedModel

from inseq_mixing import METHODS, UnknownMethodError, context_mixing, rollout
from inseq_mixing.extract import get_adapter

from ._helpers import sample_inputs


@pytest.mark.parametrize("method", METHODS)
def test_layout_rows_and_causal_zeros(model: PreTrainedModel, method: str) -> None:
    ids = sample_inputs(model, batch=2, seq=6)
    mixing = context_mixing(model, ids, method)
    assert mixing.shape == (2, model.config.num_hidden_layers, 6, 6)
    assert mixing.dtype == torch.float32
    assert mixing.min() >= 0
    torch.testing.assert_close(mixing.sum(-1), torch.ones(2, model.config.num_hidden_layers, 6))
    if get_adapter(model).is_causal:
        assert mixing.triu(1).abs().max() == 0
    else:
        assert mixing.triu(1).abs().max() > 0


@pytest.mark.parametrize("method", METHODS)
def test_padded_batch_equals_each_sequence_alone(model: PreTrainedModel, method: str) -> None:
    ids = sample_inputs(model, batch=2, seq=7)
    mask = torch.ones_like(ids)
    is_causal = get_adapter(model).is_causal
    padded = slice(0, 3) if is_causal else slice(4, 7)  # causal models pad left, encoders right
    kept = slice(3, 7) if is_causal else slice(0, 4)
    mask[1, padded] = 0
    ids[1, padded] = 0
    batched = context_mixing(model, ids, method, attention_mask=mask)
    alone = context_mixing(model, ids[1:, kept], method)
    torch.testing.assert_close(batched[1][:, kept, kept], alone[0], atol=2e-6, rtol=0)
    assert batched[1][:, padded].abs().max() == 0 and batched[1][:, :, padded].abs().max() == 0
    torch.testing.assert_close(batched[0], context_mixing(model, ids[:1], method)[0], atol=2e-6, rtol=0)


@pytest.mark.parametrize("method", ["attention_norm", "alti"])
def test_rollout_entries_are_rollouts_through_each_layer(model: PreTrainedModel, method: str) -> None:
    ids = sample_inputs(model, batch=1)
    layers = context_mixing(model, ids, method)
    rolled = context_mixing(model, ids, method, rollout=True)
    add_identity = method == "attention_norm"
    torch.testing.assert_close(rolled, rollout(layers, add_identity=add_identity))
    torch.testing.assert_close(rolled[:, -1], rollout(layers, add_identity=add_identity)[:, -1])
    assert not torch.allclose(rolled[:, -1], layers[:, -1])


def test_attention_rollout_is_attention_rolled_out(model: PreTrainedModel) -> None:
    ids = sample_inputs(model, batch=1)
    torch.testing.assert_close(
        context_mixing(model, ids, "attention_rollout"), context_mixing(model, ids, "attention", rollout=True)
    )


def test_one_dimensional_input_is_a_batch_of_one(model: PreTrainedModel) -> None:
    ids = sample_inputs(model, batch=1)
    torch.testing.assert_close(context_mixing(model, ids[0], "globenc"), context_mixing(model, ids, "globenc"))


def test_unknown_method_lists_the_available_ones(model: PreTrainedModel) -> None:
    with pytest.raises(UnknownMethodError, match=r"'altii'.*alti, value_zeroing, attention_rollout"):
        context_mixing(model, sample_inputs(model), "altii")
