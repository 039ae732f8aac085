"""A user registers an adapter for an architecture the package does not cover, outside the package."""

from __future__ import annotations

import pytest
import torch
from transformers import GPTNeoConfig, GPTNeoModel

import inseq_mixing.extract as extract
from inseq_mixing import Adapter, UnsupportedArchitectureError, context_mixing, register_adapter

from .._helpers import LAYER_MEASURES, collect_records
from .._naive import naive_measure

GPT_NEO = Adapter(
    family="GPT-Neo",
    blocks="h",
    attention="attn.attention",
    value="attn.attention.v_proj",
    output_proj="attn.attention.out_proj",
    norm1="ln_1",
    norm2="ln_2",
    ffn=("mlp",),
    norm_kind="layer",
    layout="pre_ln",
    is_causal=True,
)


@pytest.fixture
def gpt_neo(monkeypatch: pytest.MonkeyPatch) -> GPTNeoModel:
    monkeypatch.setattr(extract, "ADAPTERS", dict(extract.ADAPTERS))  # registration undone after the test
    torch.manual_seed(0)
    config = GPTNeoConfig(
        num_layers=2, num_heads=4, hidden_size=32, vocab_size=64, max_position_embeddings=64,
        attention_types=[[["global", "local"], 1]], window_size=4,
    )  # fmt: skip
    return GPTNeoModel(config).eval()


def test_unregistered_model_raises_the_clear_error(gpt_neo: GPTNeoModel) -> None:
    with pytest.raises(UnsupportedArchitectureError, match="'gpt_neo'"):
        context_mixing(gpt_neo, torch.tensor([[1, 2, 3]]), "alti")


def test_adapter_defined_outside_the_package_is_exact(gpt_neo: GPTNeoModel) -> None:
    register_adapter("gpt_neo", GPT_NEO)
    ids = torch.randint(0, 64, (2, 6), generator=torch.Generator().manual_seed(0))
    mixing = context_mixing(gpt_neo, ids, "alti", rollout=True)
    torch.testing.assert_close(mixing.sum(-1), torch.ones(2, 2, 6))
    for record in collect_records(gpt_neo, ids):
        for name in ("attention_norm_res_ln", "alti"):
            expected = naive_measure(record, name)
            actual = LAYER_MEASURES[name](record)
            assert (actual.double() - expected).abs().max() <= 1e-5 * max(1.0, expected.abs().max().item())


def test_register_adapter_rejects_what_is_not_an_adapter() -> None:
    with pytest.raises(TypeError, match="Adapter"):
        register_adapter("gpt_neo", {"blocks": "h"})
