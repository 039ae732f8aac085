"""The functional API on every supported family: layout, normalization, padding and errors."""

from __future__ import annotations

import pytest
import torch
from transformers import PreTrainedModel

from inseq_mixing import (
    MEASURES,
    METHODS,
    InvalidInputError,
    UnknownMethodError,
    UnknownOptionError,
    context_mixing,
    rollout,
)
from inseq_mixing.extract import get_adapter

from ._helpers import sample_inputs, supports


def refused(model: PreTrainedModel, method: str) -> bool:
    """For a method the table does not declare for ``model``: check that it is refused clearly (and say so)."""
    if supports(method, model):
        return False
    with pytest.raises(InvalidInputError, match=f"{method} supports"):
        context_mixing(model, sample_inputs(model, batch=1, seq=3), method)
    return True


@pytest.mark.parametrize("method", METHODS)
def test_layout_rows_and_causal_zeros(model: PreTrainedModel, method: str) -> None:
    if refused(model, method):
        return
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
    if refused(model, method):
        return
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
    with pytest.raises(UnknownMethodError, match=r"'altii'; available: attention, .*alti, value_zeroing, .*hta"):
        context_mixing(model, sample_inputs(model), "altii")


PER_HEAD_METHODS = [name for name, m in MEASURES.items() if m.maps and m.per_head and m.aggregation != "rollout_only"]


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("method", PER_HEAD_METHODS)
def test_per_head_padded_rows_equal_each_sequence_alone(model: PreTrainedModel, method: str, side: str) -> None:
    """Padding is masked for per-head results (``[batch, layer, head, query, key]``) on either side."""
    ids = sample_inputs(model, batch=3, seq=7)
    mask = torch.ones_like(ids)
    padded, kept = (slice(0, 2), slice(2, 7)) if side == "left" else (slice(5, 7), slice(0, 5))
    mask[1, padded], ids[1, padded] = 0, 0
    adapter = get_adapter(model)
    shifts_positions = side == "left" and not adapter.is_causal and adapter.position_kind == "absolute"
    if shifts_positions:  # absolute positions count the padding: the user is told, the rows cannot match
        with pytest.warns(UserWarning, match="left-padded"):
            context_mixing(model, ids, method, attention_mask=mask, per_head=True)
        return
    batched = context_mixing(model, ids, method, attention_mask=mask, per_head=True)
    n_heads = batched.shape[2]
    assert batched.shape == (3, model.config.num_hidden_layers, n_heads, 7, 7)
    alone = context_mixing(model, ids[1:2, kept], method, per_head=True)[0]
    torch.testing.assert_close(batched[1][..., kept, kept], alone, atol=2e-6, rtol=0)
    assert batched[1][..., padded, :].abs().max() == 0 and batched[1][..., :, padded].abs().max() == 0
    for row in (0, 2):  # unpadded rows are untouched
        torch.testing.assert_close(batched[row], context_mixing(model, ids[row : row + 1], method, per_head=True)[0])
    heads_mean = batched[1][..., kept, kept].sum(2 if method == "attention_norm" else 1)
    assert heads_mean.abs().max() > 0


def test_per_head_cannot_be_rolled_out(model: PreTrainedModel) -> None:
    with pytest.raises(InvalidInputError, match="per_head"):
        context_mixing(model, sample_inputs(model), "attention", per_head=True, rollout=True)


def test_misspelled_option_lists_the_measure_options_before_any_hook(model: PreTrainedModel) -> None:
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    with pytest.raises(UnknownOptionError, match=r"'simlarity'.*similarity, heads, final_norm_on_last_layer"):
        context_mixing(model, sample_inputs(model), "value_zeroing", simlarity="euclidean")
    with pytest.raises(UnknownOptionError, match=r"alti got unknown option\(s\) 'per_head'; its options are"):
        context_mixing(model, sample_inputs(model), "alti", per_head=True)
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks
