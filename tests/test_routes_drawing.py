"""The routes figure and the interactive page: rendered, and the page checked in a real headless browser."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import GPT2LMHeadModel

from inseq_mixing.information_flow import routes
from inseq_mixing.routes_plot import plot_routes, routes_html

from ._helpers import REFERENCE_DIR

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
REQUIRE_BROWSER = os.environ.get("INSEQ_MIXING_REQUIRE_BROWSER") == "1"


@pytest.fixture(scope="module")
def graph():
    model = GPT2LMHeadModel.from_pretrained(REFERENCE_DIR / "routes" / "models" / "tiny-gpt2-seed11").eval()
    ids = torch.tensor([[86, 49, 15, 64, 91, 0]])
    return routes(model, ids, position=None, tokens=[f"t{i}" for i in range(6)])


def test_layered_figure_is_rendered(graph, tmp_path) -> None:
    path = plot_routes(graph, tmp_path / "routes.png")
    image = np.asarray(Image.open(path).convert("L"))
    assert image.shape[0] > 300 and len(np.unique(image)) > 20 and (image < 128).mean() > 0.002


def test_page_is_self_contained(graph, tmp_path) -> None:
    html = routes_html(graph, tmp_path / "routes.html").read_text()
    assert "<script src=" not in html.replace('<script src="data:', "")  # plotly is bundled, nothing is fetched
    assert "Plotly.newPlot" in html or "Plotly.react" in html
    embedded = json.loads(html.split("const edges = ", 1)[1].split(";\n", 1)[0])
    assert len(embedded) == graph.number_of_edges()
    assert {(e["u"], e["v"]) for e in embedded} == set(graph.edges())


@pytest.mark.skipif(CHROMIUM is None and not REQUIRE_BROWSER, reason="needs Chromium (apt-get install chromium)")
def test_page_works_in_a_headless_browser(graph, tmp_path) -> None:
    """Loads with no console error, shows every node and edge, the slider hides light edges, a click highlights."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM is not None, "INSEQ_MIXING_REQUIRE_BROWSER=1 but no chromium on PATH"
    page_path = routes_html(graph, tmp_path / "routes.html")
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
        )
        try:
            page = browser.new_page()
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(page_path.as_uri())
            page.wait_for_function("document.getElementById('edge-count').textContent.length > 0")
            n_edges = graph.number_of_edges()
            assert page.inner_text("#edge-count") == f"{n_edges} of {n_edges} edges shown"
            n_nodes = page.evaluate("document.getElementById('routes').data.find(t => t.name === 'nodes').x.length")
            assert n_nodes == graph.number_of_nodes()
            page.fill("#threshold", "0.5")
            page.dispatch_event("#threshold", "input")
            heavy = sum(1 for _, _, data in graph.edges(data=True) if data["weight"] > 0.5)
            assert page.inner_text("#edge-count") == f"{heavy} of {n_edges} edges shown"
            page.screenshot(path=str(tmp_path / "shot.png"))
        finally:
            browser.close()
    assert errors == []
    assert len(np.unique(np.asarray(Image.open(tmp_path / "shot.png").convert("L")))) > 10
