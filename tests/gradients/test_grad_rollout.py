"""Gradient-weighted attention rollout: a straightforward implementation, padding, every position, classifiers."""

from __future__ import annotations

import pytest
import torch

from inseq_mixing import attribute_prediction
from inseq_mixing.extract import eager_attention

from .._helpers import sample_inputs
from .._tiny_models import build_tiny_model


def naive_grad_rollout(model, ids: torch.Tensor, position: int, target: int, foil: int | None) -> torch.Tensor:
    """Chefer et al. (2021), eq. 13-14, one unpadded sequence, one layer and one head at a time."""
    with eager_attention(model):
        out = model(input_ids=ids, output_attentions=True)
    logits = out.logits[0, position] if out.logits.dim() == 3 else out.logits[0]
    y = logits[target] - (logits[foil] if foil is not None else 0)
    seq = ids.shape[1]
    relevance = torch.eye(seq, dtype=torch.float64)
    for layer, weights in enumerate(out.attentions):
        (grad,) = torch.autograd.grad(y, weights, retain_graph=layer + 1 < len(out.attentions))
        heads = weights.shape[1]
        mixed = torch.zeros(seq, seq, dtype=torch.float64)
        for h in range(heads):
            mixed += (grad[0, h] * weights[0, h]).double().clamp(min=0) / heads
        relevance = relevance + mixed @ relevance
    return relevance[position if out.logits.dim() == 3 else 0]


@pytest.mark.parametrize(
    ("model_type", "head"),
    [("gpt2", "causal_lm"), ("llama", "causal_lm"), ("falcon", "causal_lm"), ("bert", "sequence_classification")],
)
def test_equals_a_straightforward_implementation(model_type: str, head: str) -> None:
    model = build_tiny_model(model_type, head=head).eval()
    ids = sample_inputs(model, batch=1, seq=6)
    classifier = head == "sequence_classification"
    position, foil = (None, 1) if classifier else (4, 7)
    out = attribute_prediction(model, ids, "grad_rollout", position=position, foil=foil)
    expected = naive_grad_rollout(model, ids, 0 if classifier else 4, int(out.target[0]), foil)
    torch.testing.assert_close(out.scores[0].double(), expected, atol=1e-6, rtol=1e-5)
    assert not out.decomposes and out.rest == {} and out.per_layer is None
    logits = model(input_ids=ids).logits
    real = logits[0] if classifier else logits[0, 4]
    torch.testing.assert_close(out.value[0], (real[out.target[0]] - real[foil]).detach(), atol=1e-5, rtol=1e-5)
    if not classifier:
        assert (out.scores[0, 5:] == 0).all()  # the future does not contribute


def test_padded_batch_equals_each_sequence_alone() -> None:
    model = build_tiny_model("qwen2", head="causal_lm")
    ids = sample_inputs(model, batch=2, seq=7)
    mask = torch.ones_like(ids)
    mask[1, :3], ids[1, :3] = 0, 0
    batched = attribute_prediction(model, ids, "grad_rollout", attention_mask=mask)
    alone = attribute_prediction(model, ids[1:, 3:], "grad_rollout")
    torch.testing.assert_close(batched.scores[1, 3:], alone.scores[0], atol=1e-5, rtol=1e-5)
    assert batched.scores[1, :3].abs().max() == 0
    torch.testing.assert_close(batched.target[1], alone.target[0])


def test_every_position_in_one_pass_equals_one_call_per_position() -> None:
    model = build_tiny_model("gpt2", head="causal_lm")
    ids = sample_inputs(model, batch=2, seq=5)
    targets = sample_inputs(model, batch=2, seq=5, seed=3)
    every = attribute_prediction(model, ids, "grad_rollout", position="all", target=targets)
    assert every.scores.shape == (2, 5, 5)
    for t in range(5):
        one = attribute_prediction(model, ids, "grad_rollout", position=t, target=targets[:, t])
        torch.testing.assert_close(every.scores[:, t], one.scores, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(every.value[:, t], one.value, atol=1e-6, rtol=1e-5)
