"""Every bad input gets a clear error (or a warning where the result is still the model's own computation)."""

from __future__ import annotations

import pytest
import torch

from inseq_mixing import InvalidInputError, context_mixing
from inseq_mixing.extract import get_adapter
from inseq_mixing.heads import ablate_heads, attention_patterns, merge_heads
from inseq_mixing.inputs import position_limit, prepare_inputs

from ._helpers import sample_inputs, tiny_model


def _gpt2():
    return tiny_model("gpt2")


def test_a_path_given_as_the_model_says_how_to_load_it() -> None:
    with pytest.raises(TypeError, match=r"not the path 'models/gpt2'.*AutoModel.from_pretrained\('models/gpt2'\)"):
        context_mixing("models/gpt2", torch.tensor([[5, 6]]), "alti")


def test_empty_ids_are_rejected() -> None:
    with pytest.raises(InvalidInputError, match=r"input_ids is empty \(shape \(1, 0\)\).*at least one token"):
        context_mixing(_gpt2(), torch.zeros(1, 0, dtype=torch.long), "alti")


@pytest.mark.parametrize(
    ("ids", "error", "message"),
    [
        ([[5, 6, 7]], TypeError, r"input_ids must be a torch tensor of token ids; got list.*torch.tensor\(\[ids\]\)"),
        (torch.tensor([[5.0, 6.0]]), TypeError, r"integer token ids; got dtype torch.float32.*ids.long\(\)"),
        (torch.ones(1, 2, 3, dtype=torch.long), InvalidInputError, r"\[seq\] or \[batch, seq\]; got shape \(1, 2, 3\)"),
        (torch.tensor([[5, 10_000]]), InvalidInputError, r"ids from 5 to 10000 but GPT2Model embeds ids 0 to \d+"),
        (torch.tensor([[-1, 5]]), InvalidInputError, r"ids from -1 to 5"),
    ],
)
def test_malformed_ids_get_a_clear_error(ids: object, error: type[Exception], message: str) -> None:
    # prepare_inputs is what every entry point runs first (context_mixing's own annotations are checked in tests)
    model = _gpt2()
    with pytest.raises(error, match=message):
        prepare_inputs(model, get_adapter(model), ids)


def test_mask_of_another_shape_and_all_padding_rows_are_rejected() -> None:
    model = _gpt2()
    ids = sample_inputs(model, batch=2, seq=5)
    with pytest.raises(InvalidInputError, match=r"attention_mask has shape \(2, 4\) but input_ids has \(2, 5\)"):
        context_mixing(model, ids, "alti", attention_mask=torch.ones(2, 4, dtype=torch.long))
    mask = torch.ones_like(ids)
    mask[1] = 0
    with pytest.raises(InvalidInputError, match=r"Row\(s\) \[1\] of attention_mask hold no real token"):
        context_mixing(model, ids, "alti", attention_mask=mask)
    with pytest.raises(InvalidInputError, match=r"only 0 .* and 1"):
        context_mixing(model, ids, "alti", attention_mask=torch.full_like(ids, 2))


def test_decoder_ids_given_to_a_decoder_only_model_are_rejected() -> None:
    model = _gpt2()
    with pytest.raises(InvalidInputError, match="decoder_input_ids was given but GPT2Model is not an encoder-decoder"):
        context_mixing(model, sample_inputs(model), "alti", decoder_input_ids=sample_inputs(model))


def test_encoder_decoder_needs_decoder_ids() -> None:
    model = tiny_model("bart")
    with pytest.raises(InvalidInputError, match="encoder-decoder model: pass decoder_input_ids"):
        context_mixing(model, sample_inputs(model), "alti")


@pytest.mark.parametrize("model_type", ["gpt2", "bert", "roberta"])
def test_too_long_for_absolute_positions_is_rejected(model_type: str) -> None:
    model = tiny_model(model_type)
    limit = position_limit(model, get_adapter(model))
    context_mixing(model, sample_inputs(model, batch=1, seq=limit), "attention")  # the longest that fits runs
    with pytest.raises(InvalidInputError, match=rf"has {limit + 1} positions but \w+ embeds at most {limit}"):
        context_mixing(model, sample_inputs(model, batch=1, seq=limit + 1), "attention")


def test_rotary_model_past_its_positions_warns() -> None:
    model = tiny_model("llama")
    limit = model.config.max_position_embeddings
    with pytest.warns(UserWarning, match=rf"{limit + 1} positions, more than the {limit} LlamaModel was built for"):
        context_mixing(model, sample_inputs(model, batch=1, seq=limit + 1), "attention")


@pytest.mark.parametrize("model_type", ["bert", "bart"])
def test_left_padding_on_absolute_positions_warns(model_type: str) -> None:
    model = tiny_model(model_type)
    ids = sample_inputs(model, batch=2, seq=6)
    mask = torch.ones_like(ids)
    mask[1, :2] = 0
    kwargs = {"decoder_input_ids": sample_inputs(model, batch=2, seq=3)} if model_type == "bart" else {}
    with pytest.warns(UserWarning, match=r"Row\(s\) \[1\] of input_ids are left-padded.*padding_side = 'right'"):
        context_mixing(model, ids, "attention", attention_mask=mask, **kwargs)


def test_head_tools_reject_heads_out_of_range() -> None:
    model = _gpt2()
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())  # transformers' own
    out_of_range = r"Head\(s\) \[9\] out of range for layer 0, which has \d+ heads"
    with pytest.raises(InvalidInputError, match=out_of_range), ablate_heads(model, {0: [9]}):
        pass
    with pytest.raises(InvalidInputError, match=r"Layer 7 out of range"), ablate_heads(model, {7: [0]}):
        pass
    with pytest.raises(InvalidInputError, match=r"same head twice \(1\)"), merge_heads(model, 0, 1, 1):
        pass
    with pytest.raises(InvalidInputError, match=r"Head\(s\) \[5\] out of range"):
        attention_patterns(model, sample_inputs(model), 0, head=5)
    assert sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()) == hooks
