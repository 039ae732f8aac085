"""Every plot renders a non-trivial PNG from real context-mixing matrices."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from inseq_mixing import context_mixing
from inseq_mixing.plot import (
    DIVIDER_GID,
    _layers_figure,
    _methods_figure,
    _source_target_figure,
    plot_contributions,
    plot_layers,
    plot_methods,
    plot_rollout,
    plot_source_target,
)

from ._helpers import sample_inputs, tiny_model
from ._tiny_models import build_tiny_model


@pytest.fixture(autouse=True)
def close_figures():
    """Figures built by the private helpers are not saved, so close them after each test."""
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


def heatmaps(fig):
    """The figure's heatmap images, panel by panel."""
    return [image for ax in fig.axes for image in ax.images]


def colorbar_axes(fig):
    """The figure's colour-bar axes: those drawing no heatmap and not switched off (empty grid cells)."""
    return [ax for ax in fig.axes if not ax.images and ax.axison]


def divider_positions(ax) -> list[float]:
    return [float(line.get_xdata()[0]) for line in ax.lines if line.get_gid() == DIVIDER_GID]


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


def test_source_and_target_panels_share_one_colour_scale_and_bar() -> None:
    combined = torch.tensor([[0.005, 0.002, 0.993, 0.0], [0.004, 0.001, 0.5, 0.495]])  # 2 source, 2 target columns
    fig = _source_target_figure(combined, ["s0", "s1"], ["t0", "t1"])
    source, target = heatmaps(fig)
    assert source.get_clim() == target.get_clim() == pytest.approx((0.0, 0.993))  # not the source's own 0.005
    assert len(colorbar_axes(fig)) == 1
    assert source.colorbar is not None and source.colorbar.norm is target.norm  # the bar shows the shared scale


def test_source_target_map_draws_a_divider_between_source_and_target() -> None:
    combined = torch.full((2, 5), 0.2)
    fig = _source_target_figure(combined, ["s0", "s1", "s2"], ["t0", "t1"])
    source_ax = fig.axes[0]
    assert divider_positions(source_ax) == [2.5]  # the right edge of the last source column


def test_each_layer_panel_has_its_own_colour_bar(gpt2_mixing) -> None:
    mixing, tokens = gpt2_mixing
    fig = _layers_figure(mixing, tokens)
    images = heatmaps(fig)
    assert len(images) == mixing.shape[0] == len(colorbar_axes(fig))
    for layer, image in enumerate(images):
        assert image.get_clim() == pytest.approx((0.0, float(mixing[layer].max())))
        assert image.colorbar is not None and image.colorbar.mappable is image
    assert len({image.colorbar.ax for image in images}) == len(images)


def test_layers_draw_the_column_divider_on_every_panel() -> None:
    mixing = torch.rand(3, 2, 5)
    fig = _layers_figure(mixing, ["t0", "t1"], column_tokens=["s0", "s1", "s2", "t0", "t1"], column_divider=3)
    panels = [ax for ax in fig.axes if ax.images]
    assert [divider_positions(ax) for ax in panels] == [[2.5]] * 3
    assert not divider_positions(_layers_figure(mixing, ["t0", "t1"], column_tokens=list("abcde")).axes[0])


@pytest.mark.parametrize("column_divider", [0, 5, -1])
def test_a_divider_outside_the_columns_is_rejected(tmp_path, column_divider: int) -> None:
    with pytest.raises(ValueError, match=f"column_divider={column_divider} is outside"):
        plot_layers(torch.rand(1, 2, 5), ["a", "b"], tmp_path / "x.png", column_tokens=list("abcde"),
                    column_divider=column_divider)  # fmt: skip


def test_methods_side_by_side_have_one_row_each_with_own_scales(tmp_path) -> None:
    model = tiny_model("gpt2")
    ids = sample_inputs(model, batch=1, seq=5)
    names = ["alti", "globenc", "attention"]
    results = context_mixing(model, ids, names)
    tokens = [f"t{i}" for i in range(5)]
    fig = _methods_figure([(name, results[name][0]) for name in names], tokens)
    images = heatmaps(fig)
    n_layers = model.config.n_layer
    assert len(images) == len(names) * n_layers == len(colorbar_axes(fig))
    for idx, image in enumerate(images):
        method, layer = names[idx // n_layers], idx % n_layers
        assert image.axes.get_title() == f"{method}, layer {layer + 1}"
        assert image.get_clim() == pytest.approx((0.0, float(results[method][0, layer].max())))
    assert_nontrivial_png(plot_methods([(n, results[n][0]) for n in names], tokens, tmp_path / "methods.png"))
    with pytest.raises(ValueError, match="one shape"):
        _methods_figure([("a", results["alti"][0]), ("b", results["alti"][0, :1])], tokens)
