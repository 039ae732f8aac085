"""Encoder-decoder models: every view exact, ALTI+ rollout, padding, value zeroing against brute force."""

from __future__ import annotations

import functools

import pytest
import torch

from inseq_mixing import METHODS, context_mixing
from inseq_mixing.measures import MEASURES
from inseq_mixing.rollout import encoder_decoder_rollout

from ._helpers import LAYER_MEASURES, SUPPORTED_SEQ2SEQ_TYPES, collect_records
from ._naive import (
    alti_bias,
    attention_vectors,
    bias_through_norms,
    brute_force_value_zeroing,
    naive_measure,
    norms_to,
    output_bias,
    stream_after_attention,
    through_norms,
    with_residual,
)
from ._tiny_models import build_tiny_model

pytestmark = pytest.mark.parametrize("model_type", SUPPORTED_SEQ2SEQ_TYPES)


@functools.cache
def seq2seq_model(model_type: str):
    return build_tiny_model(model_type, head="seq2seq_lm")


def inputs(batch: int = 2, source: int = 6, target: int = 5, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return (
        torch.randint(5, 60, (batch, source), generator=generator),
        torch.randint(5, 60, (batch, target), generator=generator),
    )


def records(model_type: str):
    source, target = inputs()
    return collect_records(seq2seq_model(model_type), source, decoder_input_ids=target)


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-5) -> None:
    scale = max(1.0, expected.double().abs().max().item())
    assert (actual.double() - expected.double()).abs().max().item() <= tol * scale


def test_every_view_is_recorded(model_type: str) -> None:
    stacks = [(r.stack, r.layer_idx, r.is_cross_attention) for r in records(model_type)]
    n_layers = seq2seq_model(model_type).config.num_layers if model_type.endswith("t5") else 2
    for stack in ("encoder", "decoder", "cross"):
        assert [idx for s, idx, _ in stacks if s == stack] == list(range(n_layers))
    assert all(cross == (stack == "cross") for stack, _, cross in stacks)


@pytest.mark.parametrize("name", sorted(set(LAYER_MEASURES) - {"value_zeroing"}))
def test_measures_equal_their_definitions_on_every_view(model_type: str, name: str) -> None:
    for record in records(model_type):
        assert_close(LAYER_MEASURES[name](record), naive_measure(record, name))


def test_parts_add_up_to_the_real_outputs(model_type: str) -> None:
    for record in records(model_type):
        assert_close(attention_vectors(record).sum(2) + output_bias(record), record.attention.output)
        r = with_residual(record, attention_vectors(record))
        transformed = through_norms(norms_to(record, "stream"), r)
        assert_close(transformed.sum(2) + alti_bias(record), stream_after_attention(record))
        norms = norms_to(record, "ffn_input")
        bias = bias_through_norms(norms, output_bias(record))
        assert_close(through_norms(norms, r).sum(2) + bias, norms[-1].output)


SEQ2SEQ_METHODS = [m for m in METHODS if "encoder-decoder" in MEASURES[m].kinds]
"""Every context-mixing method that supports encoder-decoders (DecompX does not)."""


@pytest.mark.parametrize("method", [m for m in SEQ2SEQ_METHODS if m != "value_zeroing"])
def test_rows_sum_to_one_and_the_decoder_is_causal(model_type: str, method: str) -> None:
    source, target = inputs()
    mixing = context_mixing(seq2seq_model(model_type), source, method, decoder_input_ids=target)
    for part in (mixing.encoder, mixing.decoder, mixing.cross, mixing.combined):
        torch.testing.assert_close(part.sum(-1), torch.ones_like(part.sum(-1)))
    assert mixing.decoder.triu(1).abs().max() == 0
    assert mixing.combined[..., source.shape[1] :].triu(1).abs().max() == 0
    assert mixing.cross.shape[-1] == source.shape[1] + 1
    assert mixing.combined.shape[-1] == source.shape[1] + target.shape[1]


def test_combined_rollout_equals_the_formulas_step_by_step(model_type: str) -> None:
    source, target = inputs(batch=1)
    mixing = context_mixing(seq2seq_model(model_type), source, "alti", decoder_input_ids=target)
    encoder = context_mixing(seq2seq_model(model_type), source, "alti", decoder_input_ids=target, rollout=True)
    r_enc = encoder.encoder[0, -1]
    n_src, n_tgt = source.shape[1], target.shape[1]
    previous = None
    for layer in range(mixing.cross.shape[1]):
        cross, self_mix = mixing.cross[0, layer], mixing.decoder[0, layer]
        current = torch.zeros(n_tgt, n_src + n_tgt)
        for t in range(n_tgt):
            lam = cross[t, n_src]
            for s in range(n_src):
                current[t, s] = sum(cross[t, j] * r_enc[j, s] for j in range(n_src))
                if previous is not None:
                    current[t, s] += sum(lam * self_mix[t, u] * previous[u, s] for u in range(n_tgt))
            for v in range(n_tgt):
                if previous is None:
                    current[t, n_src + v] = lam * self_mix[t, v]
                else:
                    current[t, n_src + v] = sum(lam * self_mix[t, u] * previous[u, n_src + v] for u in range(n_tgt))
            current[t] /= current[t].sum()
        torch.testing.assert_close(mixing.combined[0, layer], current, atol=1e-6, rtol=0)
        previous = current
    direct = encoder_decoder_rollout(r_enc[None], mixing.cross, mixing.decoder)
    torch.testing.assert_close(direct, mixing.combined)


@pytest.mark.parametrize("method", ["alti", "globenc", "attention_rollout"])
def test_padded_batch_equals_each_pair_alone(model_type: str, method: str) -> None:
    model = seq2seq_model(model_type)
    source, target = inputs()
    source_mask, target_mask = torch.ones_like(source), torch.ones_like(target)
    source_mask[1, 4:] = 0
    target_mask[1, 3:] = 0
    batched = context_mixing(
        model, source, method, attention_mask=source_mask, decoder_input_ids=target,
        decoder_attention_mask=target_mask,
    )  # fmt: skip
    alone = context_mixing(model, source[1:, :4], method, decoder_input_ids=target[1:, :3])
    torch.testing.assert_close(batched.encoder[1, :, :4, :4], alone.encoder[0], atol=2e-6, rtol=0)
    torch.testing.assert_close(batched.decoder[1, :, :3, :3], alone.decoder[0], atol=2e-6, rtol=0)
    keep_cross = [0, 1, 2, 3, source.shape[1]]  # real sources and the residual column
    torch.testing.assert_close(batched.cross[1, :, :3][..., keep_cross], alone.cross[0], atol=2e-6, rtol=0)
    keep_combined = [0, 1, 2, 3, *range(source.shape[1], source.shape[1] + 3)]
    torch.testing.assert_close(batched.combined[1, :, :3][..., keep_combined], alone.combined[0], atol=2e-6, rtol=0)
    assert batched.cross[1, :, 3:].abs().max() == 0 and batched.cross[1, :, :, 4:6].abs().max() == 0


@pytest.mark.parametrize("stack", ["encoder", "decoder", "cross"])
def test_value_zeroing_shortcut_equals_brute_force(model_type: str, stack: str) -> None:
    model = seq2seq_model(model_type)
    source, target = inputs(batch=1, source=5, target=4)
    mixing = context_mixing(model, source, "value_zeroing", decoder_input_ids=target, normalize=False)
    scores = getattr(mixing, stack)[0]
    zeroed = source if stack in ("encoder", "cross") else target
    for layer in range(scores.shape[0]):
        for token in range(zeroed.shape[1]):
            expected = brute_force_value_zeroing(
                model, source, layer, token, stack=stack, decoder_input_ids=target
            )[0]  # fmt: skip
            torch.testing.assert_close(scores[layer, :, token].double(), expected, atol=2e-6, rtol=0)
    if stack == "cross":
        assert scores[..., -1].abs().max() == 0  # the residual has no value vector to zero
