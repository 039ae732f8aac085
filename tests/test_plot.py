"""Every plot renders a non-trivial PNG from real context-mixing matrices."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from inseq_mixing import context_mixing
from inseq_mixing.plot import plot_contributions, plot_layers, plot_rollout, plot_source_target

from ._helpers import sample_inputs, tiny_model
from ._tiny_models import build_tiny_model


def assert_nontrivial_png(path) -> None:
    image = np.asarray(Image.open(path).convert("L"))
    assert image.shape[0] > 200 and image.shape[1] > 200
    assert len(np.unique(image)) > 20  # text, colour scale and cells, not a blank canvas
    assert (image < 128).mean() > 0.005  # some dark ink


@pytest.fixture
def gpt2_mixing() -> tuple[torch.Tensor, list[str]]:
    model = tiny_model("gpt2")
    ids = sample_inputs(model, batch=1, seq=6)
    return context_mixing(model, ids, "alti", rollout=True)[0], [f"t{i}" for i in range(6)]


def test_per_layer_heatmaps(tmp_path, gpt2_mixing) -> None:
    mixing, tokens = gpt2_mixing
    assert_nontrivial_png(plot_layers(mixing, tokens, tmp_path / "layers.png", title="alti"))


def test_rollout_heatmap(tmp_path, gpt2_mixing) -> None:
    mixing, tokens = gpt2_mixing
    assert_nontrivial_png(plot_rollout(mixing[-1], tokens, tmp_path / "rollout.png"))


def test_contribution_bars(tmp_path, gpt2_mixing) -> None:
    mixing, tokens = gpt2_mixing
    assert_nontrivial_png(plot_contributions(mixing[-1, -1], tokens, tmp_path / "bars.png", receiver=tokens[-1]))


def test_source_target_map(tmp_path) -> None:
    model = build_tiny_model("marian", head="seq2seq_lm")
    source, target = torch.randint(5, 60, (1, 5)), torch.randint(5, 60, (1, 4))
    mixing = context_mixing(model, source, "alti", decoder_input_ids=target)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # layout warnings would mean a broken figure
        path = plot_source_target(
            mixing.combined[0, -1], [f"s{i}" for i in range(5)], [f"t{i}" for i in range(4)], tmp_path / "st.png"
        )
    assert_nontrivial_png(path)


def test_labels_must_match_the_matrix(tmp_path, gpt2_mixing) -> None:
    mixing, tokens = gpt2_mixing
    with pytest.raises(ValueError, match="5 token labels"):
        plot_rollout(mixing[-1], tokens[:5], tmp_path / "x.png")
