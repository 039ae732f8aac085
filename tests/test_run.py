"""One run layer: several measures from one forward pass, shared work, and measures that carry a state."""

from __future__ import annotations

import pytest
import torch
from transformers import PreTrainedModel

import inseq_mixing.measures as measures
import inseq_mixing.measures._decompose as decompose
from inseq_mixing import METHODS, InvalidInputError, UnknownOptionError, context_mixing
from inseq_mixing.encoder_decoder import EncoderDecoderMixing
from inseq_mixing.extract import blocks_of, get_adapter
from inseq_mixing.extract._modules import resolve
from inseq_mixing.measures import MEASURES, Measure
from inseq_mixing.record import HeadRecord, LayerRecord
from inseq_mixing.run import Request, run

from ._helpers import sample_inputs, supports, tiny_model
from ._tiny_models import build_tiny_model


def forwards(model: torch.nn.Module) -> list[int]:
    """A counter of the bare model's forward passes (returns a one-element list and the hook handle)."""
    calls = [0]

    def count(*_args: object) -> None:
        calls[0] += 1

    return calls, model.base_model.register_forward_pre_hook(count)


def test_every_method_from_one_forward_equals_the_single_calls(model: PreTrainedModel) -> None:
    ids = sample_inputs(model, batch=2, seq=6)
    mask = torch.ones_like(ids)
    mask[1, slice(0, 2) if get_adapter(model).is_causal else slice(4, 6)] = 0  # causal models pad left, encoders right
    recorded = [m for m in METHODS if supports(m, model) and not MEASURES[m].is_gradient]  # HTA differentiates
    calls, handle = forwards(model)
    try:
        together = context_mixing(model, ids, recorded, attention_mask=mask)
    finally:
        handle.remove()
    assert calls == [1] and set(together) == set(recorded)
    for name in recorded:
        torch.testing.assert_close(together[name], context_mixing(model, ids, name, attention_mask=mask),
                                   atol=1e-6, rtol=0)  # fmt: skip


def test_several_methods_on_an_encoder_decoder() -> None:
    model = tiny_model("bart")
    ids, target = sample_inputs(model, seq=5), sample_inputs(model, seq=4, seed=1)
    together = context_mixing(model, ids, ["alti", "attention", "value_zeroing"], decoder_input_ids=target)
    for name, result in together.items():
        alone = context_mixing(model, ids, name, decoder_input_ids=target)
        assert isinstance(result, EncoderDecoderMixing)
        for stack in ("encoder", "decoder", "cross"):
            torch.testing.assert_close(getattr(result, stack), getattr(alone, stack), atol=1e-6, rtol=0)


def test_options_go_to_the_methods_that_take_them() -> None:
    model = tiny_model("gpt2")
    ids = sample_inputs(model)
    both = context_mixing(model, ids, ["attention_norm", "value_zeroing"], per_head=True, similarity="euclidean")
    torch.testing.assert_close(both["attention_norm"], context_mixing(model, ids, "attention_norm", per_head=True))
    euclid = context_mixing(model, ids, "value_zeroing", similarity="euclidean")
    torch.testing.assert_close(both["value_zeroing"], euclid)
    with pytest.raises(UnknownOptionError, match=r"No requested method takes option\(s\) 'simlarity'.*alti: "):
        context_mixing(model, ids, ["alti", "value_zeroing"], simlarity="euclidean")
    with pytest.raises(InvalidInputError, match="requested once"):
        context_mixing(model, ids, ["alti", "alti"])


def test_shared_work_is_done_once_per_layer(monkeypatch: pytest.MonkeyPatch) -> None:
    """``attention_norm`` and ``attention_norm_res`` share the Gram quadratic form; GlobEnc and +RES1+LN1 do in pre-LN
    blocks (both go through the FFN's input norm): 2 distinct forms per layer for 4 measures."""
    model = tiny_model("gpt2")
    calls = []
    original = decompose._quadratic_form
    monkeypatch.setattr(decompose, "_quadratic_form", lambda *a: calls.append(1) or original(*a))
    names = ["attention_norm", "attention_norm_res", "attention_norm_res_ln", "globenc"]
    context_mixing(model, sample_inputs(model), names)
    assert len(calls) == 2 * model.config.n_layer


class StreamNorms:
    """A test measure carrying a state across layers and reading the FFN and the head: per layer, the norm of the
    FFN's output rebuilt from its recorded parts; at the end, the unembedding logits' norm of every position."""

    def __init__(self, *, memory_budget: int, scale: float = 1.0) -> None:
        self.scale = scale
        self.per_layer: list[torch.Tensor] = []

    def layer(self, record: LayerRecord) -> None:
        ffn = record.ffn
        hidden = ffn.activated * (ffn.up if ffn.is_gated else 1)
        out = hidden @ ffn.w_out + (0 if ffn.b_out is None else ffn.b_out)
        self.per_layer.append(out.norm(dim=-1) * self.scale)

    def result(self, head: HeadRecord | None) -> torch.Tensor:
        last = head.logits.norm(dim=-1)  # [batch, query] (causal LM) or [batch] (classifier)
        last = last if last.dim() == 2 else last[:, None].expand(-1, self.per_layer[0].shape[1])
        return torch.cat([torch.stack(self.per_layer, 1), last[:, None]], dim=1)


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "bert"])
def test_a_cross_layer_measure_is_one_class_and_one_table_entry(model_type: str, monkeypatch) -> None:
    table_entry = Measure("stream_norms", state=StreamNorms, needs_ffn=True, needs_head=True, inseq=False)
    monkeypatch.setitem(measures.MEASURES, "stream_norms", table_entry)
    head = "causal_lm" if model_type != "bert" else "sequence_classification"
    model = build_tiny_model(model_type, head=head)
    ids = sample_inputs(model)
    result = context_mixing(model, ids, "stream_norms", scale=2.0)
    ffn_outputs, handles = [], []
    for block in blocks_of(model):
        module = resolve(block, get_adapter(model).ffn[-1])
        handles.append(module.register_forward_hook(lambda m, i, o: ffn_outputs.append(o.norm(dim=-1))))
    try:
        with torch.no_grad():
            logits = model(input_ids=ids).logits
    finally:
        for handle in handles:
            handle.remove()
    torch.testing.assert_close(result[:, :-1], 2.0 * torch.stack(ffn_outputs, 1), atol=1e-5, rtol=1e-5)
    norms = logits.norm(dim=-1)
    norms = norms if norms.dim() == 2 else norms[:, None].expand(-1, ids.shape[1])
    torch.testing.assert_close(result[:, -1], norms, atol=1e-4, rtol=1e-5)


def test_run_returns_raw_matrices_per_stack() -> None:
    model = tiny_model("llama")
    result = run(model, sample_inputs(model), [Request(measures.MEASURES["alti"])])
    raw = result.raw["alti"]["layers"]
    assert raw.shape[:2] == (2, model.config.num_hidden_layers) and not torch.allclose(raw.sum(-1), raw.new_ones(1))
