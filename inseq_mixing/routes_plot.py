"""Drawing information-flow graphs: a layered matplotlib figure and a self-contained interactive HTML page.

Layers run bottom to top and tokens left to right: ``X0_t`` at the bottom, then for each layer ``A{l}_t`` (after the
attention), ``M{l}_t`` (the FFN, drawn a little to the right) and ``I{l}_t`` (after the FFN). Edge widths follow the
weights; attention edges are coloured by head when the graph has one edge per head.
"""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx

from .plot import _pyplot, _save

HEAD_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
                "#17becf")  # fmt: skip
ATTENTION_COLOUR, FFN_COLOUR, RESIDUAL_COLOUR = "#3b75af", "#c0392b", "#999999"
_LEVEL = {"X": 0, "A": 1, "M": 2, "I": 3}


def node_position(node: str) -> tuple[float, float]:
    """``(x, y)`` of a node: its token position, and three levels per layer above the input tokens."""
    name, position = node.rsplit("_", 1)
    kind, layer = name[0], int(name[1:] or 0)
    x = int(position) + (0.35 if kind == "M" else 0.0)
    return float(x), 0.0 if kind == "X" else float(3 * layer + _LEVEL[kind])


def _edge_colour(u: str, v: str, data: dict) -> str:
    if "head" in data:
        return HEAD_COLOURS[int(data["head"]) % len(HEAD_COLOURS)]
    if v[0] == "A":
        return ATTENTION_COLOUR
    return FFN_COLOUR if "M" in (u[0], v[0]) else RESIDUAL_COLOUR


def _edges(graph: nx.DiGraph):
    if graph.is_multigraph():
        return graph.edges(keys=False, data=True)
    return graph.edges(data=True)


def plot_routes(graph: nx.DiGraph, path: str | Path, *, title: str = "", tokens: list[str] | None = None) -> Path:
    """Save the graph as a layered figure (edge width ∝ weight; heads coloured with one edge per head).

    Args:
        graph: A graph from :func:`inseq_mixing.routes`.
        path: Output image file.
        title: Figure title.
        tokens: Labels of the token columns (default: the nodes' ``token`` attributes, else positions).

    Returns:
        The path written.
    """
    plt = _pyplot()
    positions = {node: node_position(node) for node in graph.nodes}
    n_tokens = 1 + int(max((p[0] for p in positions.values()), default=0))
    top = max((p[1] for p in positions.values()), default=1.0)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * n_tokens + 2), max(4.0, 0.45 * top + 2)), layout="constrained")
    for u, v, data in _edges(graph):
        (x0, y0), (x1, y1) = positions[u], positions[v]
        ax.plot([x0, x1], [y0, y1], color=_edge_colour(u, v, data), linewidth=0.3 + 4 * float(data["weight"]),
                alpha=0.75, solid_capstyle="round", gid="edge")  # fmt: skip
    xs, ys = zip(*positions.values(), strict=True) if positions else ((), ())
    ax.scatter(xs, ys, s=18, color="black", zorder=3, gid="nodes")
    labels = tokens or [_token_label(graph, t) for t in range(n_tokens)]
    ax.set_xticks(range(n_tokens), labels, rotation=60, fontsize=8)
    n_layers = round(top / 3)
    ax.set_yticks([3 * layer for layer in range(n_layers + 1)], ["input", *[f"layer {i + 1}" for i in range(n_layers)]])
    ax.set_title(title or f"information-flow routes ({graph.number_of_edges()} edges)")
    ax.spines[["top", "right"]].set_visible(False)
    return _save(fig, path)


def _token_label(graph: nx.DiGraph, position: int) -> str:
    node = graph.nodes.get(f"X0_{position}", {})
    return node.get("token") or str(position)


def routes_html(graph: nx.DiGraph, path: str | Path, *, title: str = "") -> Path:
    """Write a self-contained interactive page of the graph (plotly, bundled: no network needed to open it).

    Hovering an edge's midpoint shows its layer, head and weight; clicking a node highlights the routes that reach it;
    a slider hides the edges below a threshold.

    Args:
        graph: A graph from :func:`inseq_mixing.routes` (usually the full graph, ``position=None``).
        path: Output ``.html`` file.
        title: Page title.

    Returns:
        The path written.
    """
    try:
        import plotly.graph_objects as go
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("The interactive page needs plotly: pip install 'inseq-mixing[plot]'.") from error
    positions = {node: node_position(node) for node in graph.nodes}
    edges = []
    for u, v, data in _edges(graph):
        edges.append({"u": u, "v": v, "w": float(data["weight"]), "layer": int(data.get("layer", 0)),
                      "head": data.get("head"), "colour": _edge_colour(u, v, data)})  # fmt: skip
    fig = go.Figure()
    for edge in edges:  # one trace per edge: widths differ, and the page script restyles them one by one
        (x0, y0), (x1, y1) = positions[edge["u"]], positions[edge["v"]]
        line = {"width": 0.5 + 6 * edge["w"], "color": edge["colour"]}
        fig.add_trace(
            go.Scatter(x=[x0, x1], y=[y0, y1], mode="lines", hoverinfo="skip", showlegend=False, line=line, opacity=0.8)
        )
    middles = [[(a + b) / 2 for a, b in zip(positions[e["u"]], positions[e["v"]], strict=True)] for e in edges]
    hover = [_edge_hover(e) for e in edges]
    fig.add_trace(
        go.Scatter(
            x=[m[0] for m in middles],
            y=[m[1] for m in middles],
            mode="markers",
            hovertext=hover,
            hoverinfo="text",
            marker={"size": 7, "opacity": 0.01},
            showlegend=False,
            name="edges",
        )
    )
    nodes = list(graph.nodes)
    node_text = [f"{n}" + (f" ({graph.nodes[n]['token']})" if graph.nodes[n].get("token") else "") for n in nodes]
    fig.add_trace(
        go.Scatter(
            x=[positions[n][0] for n in nodes],
            y=[positions[n][1] for n in nodes],
            mode="markers",
            hovertext=node_text,
            hoverinfo="text",
            customdata=nodes,
            name="nodes",
            marker={"size": 9, "color": "black"},
            showlegend=False,
        )
    )
    axis = {"showgrid": False, "zeroline": False}
    fig.update_layout(
        title=title or "information-flow routes",
        plot_bgcolor="white",
        height=700,
        xaxis={**axis, "title": "token"},
        yaxis={**axis, "title": "level"},
    )
    script = _PAGE_SCRIPT.replace("__EDGES__", json.dumps([{k: e[k] for k in ("u", "v", "w")} for e in edges]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(path, include_plotlyjs=True, full_html=True, post_script=script, div_id="routes")
    html = path.read_text(encoding="utf-8")
    slider = ('<div style="font-family:sans-serif;margin:8px">threshold <input id="threshold" type="range" min="0" '
              'max="1" step="0.01" value="0"> <span id="threshold-value">0.00</span> · click a node to highlight '
              'its routes, click the background to reset · <span id="edge-count"></span></div>')  # fmt: skip
    path.write_text(html.replace("<body>", "<body>" + slider, 1), encoding="utf-8")
    return path


def _edge_hover(edge: dict) -> str:
    head = f", head {edge['head']}" if edge["head"] is not None else ""
    return f"{edge['u']} → {edge['v']}<br>layer {edge['layer'] + 1}{head}<br>weight {edge['w']:.4f}"


_PAGE_SCRIPT = """
const edges = __EDGES__;
const plot = document.getElementById('routes');
let threshold = 0, focus = null;
function reaching(target) {  // edges on the routes that reach `target`, walking backwards
  const keep = new Set(), todo = [target], seen = new Set([target]);
  while (todo.length) {
    const node = todo.pop();
    edges.forEach((e, i) => {
      if (e.v !== node || e.w <= threshold) return;
      keep.add(i);
      if (!seen.has(e.u)) { seen.add(e.u); todo.push(e.u); }
    });
  }
  return keep;
}
function redraw() {
  const chosen = focus === null ? null : reaching(focus);
  const opacity = edges.map((e, i) => (e.w <= threshold ? 0 : (chosen === null || chosen.has(i) ? 0.8 : 0.08)));
  Plotly.restyle(plot, {opacity: opacity}, edges.map((e, i) => i));
  const shown = opacity.filter(o => o > 0.5).length;
  document.getElementById('edge-count').textContent = shown + ' of ' + edges.length + ' edges shown';
  document.getElementById('threshold-value').textContent = threshold.toFixed(2);
}
document.getElementById('threshold').addEventListener('input', ev => {
  threshold = parseFloat(ev.target.value);
  redraw();
});
plot.on('plotly_click', ev => {
  const p = ev.points[0];
  if (p && p.customdata) { focus = p.customdata; redraw(); }
});
plot.on('plotly_doubleclick', () => { focus = null; redraw(); });
redraw();
"""
