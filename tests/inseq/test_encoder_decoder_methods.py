"""Context-mixing methods through inseq on encoder-decoder models: source and target contributions per step.

The target prefix is attributed only with ``attribute_target=True`` (inseq's semantics), which these tests pass.
"""

from __future__ import annotations

import pytest
import torch

from inseq_mixing import context_mixing

from .conftest import load

SOURCE, TARGET = "either you win the game", "the cat sat on the mat"
SEQ2SEQ = ("marian", "bart", "t5")


def encode(model, text: str, as_target: bool = False) -> torch.Tensor:
    tokenizer = model.tokenizer
    if as_target:
        ids = tokenizer(text_target=text, return_tensors="pt").input_ids
        start = torch.tensor([[model.model.config.decoder_start_token_id]])
        return torch.cat([start, ids], dim=1)
    return tokenizer(text, return_tensors="pt").input_ids


@pytest.mark.parametrize("method", ["alti", "globenc", "attention_norm", "value_zeroing"])
@pytest.mark.parametrize("model_type", SEQ2SEQ)
def test_steps_equal_context_mixing_rows(model_type: str, method: str) -> None:
    model = load(model_type, method)
    seq = model.attribute(SOURCE, TARGET, attribute_target=True, show_progress=False).sequence_attributions[0]
    source_ids, target_ids = encode(model, SOURCE), encode(model, TARGET, as_target=True)
    assert [t.id for t in seq.target] == target_ids[0].tolist()
    options = {"zero_below": 1e-5, "final_norm_on_last_layer": True} if method == "value_zeroing" else {}
    rolled = method in ("alti", "globenc")
    mixing = context_mixing(
        model.model, source_ids, method, decoder_input_ids=target_ids, rollout=rolled, **options
    )  # fmt: skip
    n_src = source_ids.shape[1]
    per_source = mixing.combined[0, ..., :n_src] if rolled else mixing.cross[0, ..., :n_src]
    per_target = mixing.combined[0, ..., n_src:] if rolled else mixing.decoder[0]
    for k, pos in enumerate(range(seq.attr_pos_start, seq.attr_pos_end)):
        torch.testing.assert_close(seq.source_attributions[:, k, :], per_source[:, pos - 1, :].T)
        torch.testing.assert_close(seq.target_attributions[:pos, k, :], per_target[:, pos - 1, :pos].T)
    torch.testing.assert_close(seq.sequence_scores["encoder_mixing"], mixing.encoder[0].permute(2, 1, 0))


@pytest.mark.parametrize("model_type", SEQ2SEQ)
def test_source_and_target_contributions_sum_to_one(model_type: str) -> None:
    out = load(model_type, "alti").attribute(SOURCE, TARGET, attribute_target=True, show_progress=False)
    seq = out.sequence_attributions[0]
    total = torch.nansum(seq.source_attributions, 0) + torch.nansum(seq.target_attributions, 0)
    torch.testing.assert_close(total, torch.ones_like(total))


def test_one_decoder_pass_serves_every_step() -> None:
    model = load("marian", "alti")
    calls = []
    handle = model.model.get_decoder().register_forward_pre_hook(lambda *args: calls.append(1))
    try:
        model.attribute(SOURCE, TARGET, show_progress=False)
    finally:
        handle.remove()
    assert len(calls) == 1


@pytest.mark.parametrize("attribute_target", [False, True])
@pytest.mark.parametrize("model_type", SEQ2SEQ)
def test_padded_batch_equals_each_pair_alone(model_type: str, attribute_target: bool) -> None:
    model = load(model_type, "alti")
    sources, targets = ["either you win the game", "the dog"], ["the cat sat on the mat", "a cat"]
    kwargs = {"attribute_target": attribute_target, "show_progress": False}
    batched = model.attribute(sources, targets, **kwargs)
    for source, target, seq in zip(sources, targets, batched.sequence_attributions, strict=True):
        alone = model.attribute(source, target, **kwargs).sequence_attributions[0]
        assert [t.token for t in seq.target] == [t.token for t in alone.target]
        torch.testing.assert_close(seq.source_attributions, alone.source_attributions, equal_nan=True)
        if attribute_target:
            torch.testing.assert_close(seq.target_attributions, alone.target_attributions, equal_nan=True)
        else:
            assert seq.target_attributions is None and alone.target_attributions is None


def test_show_displays_source_and_target(capsys: pytest.CaptureFixture[str]) -> None:
    out = load("t5", "alti").attribute(SOURCE, TARGET, attribute_target=True, show_progress=False)
    out.show()
    printed = capsys.readouterr().out
    assert "game" in printed and "mat" in printed
    html = out.show(display=False, return_html=True)
    assert "game" in html and "mat" in html


def test_generation_attributes_every_generated_token() -> None:
    out = load("marian", "globenc").attribute(
        SOURCE, generation_args={"max_new_tokens": 4}, attribute_target=True, show_progress=False
    )
    seq = out.sequence_attributions[0]
    assert seq.source_attributions.shape[1] == seq.attr_pos_end - seq.attr_pos_start <= 4
    total = torch.nansum(seq.source_attributions, 0) + torch.nansum(seq.target_attributions, 0)
    torch.testing.assert_close(total, torch.ones_like(total))


def test_save_and_load_round_trip(tmp_path) -> None:
    import inseq

    out = load("t5", "alti").attribute(SOURCE, TARGET, attribute_target=True, show_progress=False)
    out.save(tmp_path / "out.json")
    loaded = inseq.FeatureAttributionOutput.load(tmp_path / "out.json").sequence_attributions[0]
    original = out.sequence_attributions[0]
    torch.testing.assert_close(loaded.source_attributions, original.source_attributions, equal_nan=True)
    torch.testing.assert_close(loaded.target_attributions, original.target_attributions, equal_nan=True)
    torch.testing.assert_close(loaded.aggregate().source_attributions, original.aggregate().source_attributions)
