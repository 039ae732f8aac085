"""Information-flow routes: per-layer contributions as a graph, and the routes that reach a prediction.

Ferrando & Voita, "Information Flow Routes: Automatically Interpreting Language Models at Scale", EMNLP 2024. Node
names follow facebookresearch/llm-transparency-tool's graphs: ``X0_{t}`` the input token, ``A{l}_{t}`` the stream
after layer ``l``'s attention, ``M{l}_{t}`` its FFN, ``I{l}_{t}`` the stream after it; edge attribute ``weight``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, no_type_check

import networkx as nx
import torch
from torch import Tensor

from .measures import DEFAULT_MEMORY_BUDGET, Measure
from .measures.flow import FlowContributions, flow_contributions_of
from .record import HeadRecord, LayerRecord
from .run import Request, run

TOOL_FLOOR, TOOL_EPS = 1e-5, 1e-6
"""The reference tool's clip of each proximity and ``torch.pairwise_distance``'s eps (``tool_compatible=True``)."""


class _FlowState:
    """Collects every layer's contributions (a cross-layer state: nothing but the small results is kept)."""

    def __init__(self, *, memory_budget: int, tool_compatible: bool = False) -> None:
        self.options = {"memory_budget": memory_budget}
        if tool_compatible:
            self.options.update(floor=TOOL_FLOOR, eps=TOOL_EPS, value_bias_in_parts=False)
        self.layers: list[FlowContributions] = []

    def layer(self, record: LayerRecord) -> None:
        self.layers.append(flow_contributions_of(record, **self.options))

    def result(self, head: HeadRecord | None) -> FlowContributions:
        fields = ("attention", "residual_attention", "ffn", "residual_ffn")
        return FlowContributions(*(torch.stack([getattr(c, f) for c in self.layers], dim=1) for f in fields))


_FLOW = Measure("flow_contributions", state=_FlowState, kinds=frozenset({"decoder", "encoder"}), inseq=False)
_FLOW_TOOL = replace(_FLOW, needs_ffn=True)  # the value projection's bias is needed to leave it out of the parts


@no_type_check  # validates its own arguments (inputs.py): users get a message, not a type-check error
def flow_contributions(
    model: Any,
    input_ids: Any,
    *,
    attention_mask: Any = None,
    tool_compatible: bool = False,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> FlowContributions:
    """Every layer's edge contributions, from one forward pass (see :mod:`inseq_mixing.measures.flow`).

    Args:
        model: A pre-LN or parallel decoder (or encoder) of a supported family.
        input_ids: Token ids ``[batch, seq]``.
        attention_mask: 1 for real tokens, 0 for padding.
        tool_compatible: Reproduce facebookresearch/llm-transparency-tool's own numbers: the value bias in no part
            (as its usual model loading leaves it, its issue #35), its 1e-5 clip and 1e-6 distance eps.
        memory_budget: Bytes one ``[key, query, d_model]`` block may use.

    Returns:
        :class:`FlowContributions` with a layer dimension after batch: ``attention [batch, layer, query, key, head]``,
        the others ``[batch, layer, query]``; each receiving node's parts sum to 1.
    """
    request = Request(_FLOW_TOOL if tool_compatible else _FLOW, {"tool_compatible": tool_compatible})
    result = run(model, input_ids, [request], attention_mask=attention_mask, memory_budget=memory_budget)
    flow = result.results[request.measure.name]
    mask = result.inputs.masks["layers"][0].to(flow.ffn.dtype)
    valid_q = mask[:, None, :]  # padding rows and columns are 0
    return FlowContributions(
        flow.attention * valid_q[..., None, None] * mask[:, None, None, :, None],
        flow.residual_attention * valid_q,
        flow.ffn * valid_q,
        flow.residual_ffn * valid_q,
    )


@dataclass(frozen=True)
class _Layer:
    """One sequence's contributions of one layer."""

    attention: Tensor  # [query, key, head]
    residual_attention: Tensor  # [query]
    ffn: Tensor
    residual_ffn: Tensor


def _sequence_layer(flow: FlowContributions, row: int, layer: int, real: Tensor) -> _Layer:
    """One sequence's real tokens of one layer, in float64 on the CPU."""
    take = lambda t: t[row, layer][real].double().cpu()  # noqa: E731
    return _Layer(take(flow.attention)[:, real], take(flow.residual_attention), take(flow.ffn), take(flow.residual_ffn))


def threshold_and_renormalize(layer: _Layer, threshold: float, *, tool_ffn_quirk: bool = False) -> _Layer:
    """Zero every part ``≤ threshold`` (each key and head, and the residual, before heads are summed), then divide each
    node's surviving parts by their sum. ``tool_ffn_quirk`` reproduces the reference tool's FFN renormalization, which
    divides each FFN node by its residual part plus the FFN parts of every token."""
    keep = lambda t: torch.where(t > threshold, t, torch.zeros_like(t))  # noqa: E731
    attention, residual = keep(layer.attention), keep(layer.residual_attention)
    total = attention.sum(dim=(-1, -2)) + residual
    total = torch.where(total > 0, total, torch.ones_like(total))
    ffn, residual_ffn = keep(layer.ffn), keep(layer.residual_ffn)
    ffn_total = residual_ffn + (ffn.sum() if tool_ffn_quirk else ffn)
    ffn_total = torch.where(ffn_total > 0, ffn_total, torch.ones_like(ffn_total))
    return _Layer(attention / total[:, None, None], residual / total, ffn / ffn_total, residual_ffn / ffn_total)


def _node(kind: str, layer: int, position: int) -> str:
    return f"X0_{position}" if kind == "X" else f"{kind}{layer}_{position}"


def full_graph(layers: list[_Layer], *, per_head: bool = False, tokens: list[str] | None = None) -> nx.DiGraph:
    """The graph of every layer's contributions (edges of weight 0 are left out)."""
    graph: nx.DiGraph = nx.MultiDiGraph() if per_head else nx.DiGraph()
    n = layers[0].ffn.shape[0]
    for position in range(n):
        graph.add_node(_node("X", 0, position), layer=-1, position=position, kind="input",
                       token=None if tokens is None else tokens[position])  # fmt: skip
    for idx, layer in enumerate(layers):
        for position in range(n):
            for kind, name in (("A", "after attention"), ("M", "FFN"), ("I", "after FFN")):
                graph.add_node(_node(kind, idx, position), layer=idx, position=position, kind=name,
                               token=None if tokens is None else tokens[position])  # fmt: skip
        source = (lambda j: _node("X", 0, j)) if idx == 0 else (lambda j, idx=idx: _node("I", idx - 1, j))
        attention = layer.attention.tolist()  # [query][key][head]
        for i in range(n):
            for j in range(n):
                heads = attention[i][j]
                residual = float(layer.residual_attention[i]) if i == j else 0.0
                if per_head:
                    for h, weight in enumerate(heads):
                        if weight > 0:
                            graph.add_edge(source(j), _node("A", idx, i), key=h, weight=weight, head=h, layer=idx)
                    if residual > 0:
                        graph.add_edge(source(j), _node("A", idx, i), key="residual", weight=residual, layer=idx)
                else:
                    weight = sum(heads) + residual
                    if weight > 0:
                        graph.add_edge(source(j), _node("A", idx, i), weight=weight, layer=idx)
            ffn, residual_ffn = float(layer.ffn[i]), float(layer.residual_ffn[i])
            for u, v, weight in (("A", "M", ffn), ("M", "I", ffn), ("A", "I", residual_ffn)):
                if weight > 0:
                    graph.add_edge(_node(u, idx, i), _node(v, idx, i), weight=weight, layer=idx)
    return graph


def routes_to(graph: nx.DiGraph, target: str, threshold: float) -> nx.DiGraph:
    """The edge subgraph reachable backwards from ``target`` through edges heavier than ``threshold``."""
    reached, frontier, edges = {target}, [target], []
    while frontier:
        node = frontier.pop()
        for u, _v, key, data in _in_edges(graph, node):
            if data["weight"] > threshold:
                edges.append((u, node, key) if graph.is_multigraph() else (u, node))
                if u not in reached:
                    reached.add(u)
                    frontier.append(u)
    return graph.edge_subgraph(edges).copy()


def _in_edges(graph: nx.DiGraph, node: str):
    if graph.is_multigraph():
        return graph.in_edges(node, keys=True, data=True)
    return ((u, v, None, data) for u, v, data in graph.in_edges(node, data=True))


@no_type_check  # validates its own arguments (inputs.py): users get a message, not a type-check error
def routes(
    model: Any,
    input_ids: Any,
    *,
    position: int | None = -1,
    threshold: float | None = 0.04,
    renormalize: bool = True,
    batch_index: int = 0,
    attention_mask: Any = None,
    per_head: bool = False,
    tool_compatible: bool = False,
    tokens: list[str] | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> nx.DiGraph:
    """The information-flow graph of one sequence, or the routes that reach one position's prediction.

    Args:
        model: A pre-LN or parallel decoder of a supported family.
        input_ids: Token ids ``[batch, seq]`` (or ``[seq]``).
        position: The position whose routes are kept (``-1``: the last real token); ``None`` for the full graph.
        threshold: Parts at or below it are dropped and each node's others renormalized (the paper's 0.04); ``None``
            keeps every part.
        renormalize: With a position: walk the thresholded, renormalized graph through every remaining edge (the
            tool's default); ``False`` walks the unthresholded graph through edges above ``threshold``.
        batch_index: Which sequence of the batch.
        attention_mask: 1 for real tokens, 0 for padding (the graph covers the real tokens).
        per_head: One attention edge per head (a ``MultiDiGraph`` with a ``head`` attribute).
        tool_compatible: llm-transparency-tool's own numbers (value bias in no part, its clip and eps, its FFN
            renormalization), so users of the tool can compare.
        tokens: Token strings stored on the nodes (attribute ``token``).
        memory_budget: Bytes one ``[key, query, d_model]`` block may use.

    Returns:
        A ``networkx.DiGraph`` (``MultiDiGraph`` with ``per_head``); edges carry ``weight`` and ``layer``.
    """
    flow = flow_contributions(model, input_ids, attention_mask=attention_mask, tool_compatible=tool_compatible,
                              memory_budget=memory_budget)  # fmt: skip
    ids = input_ids if input_ids.dim() == 2 else input_ids[None]
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask.reshape(ids.shape)
    real = mask[batch_index].bool().cpu()
    n_layers = flow.ffn.shape[1]
    layers = [_sequence_layer(flow, batch_index, idx, real) for idx in range(n_layers)]
    n = int(real.sum())
    walk_threshold = 0.0
    if threshold is not None and (position is None or renormalize):
        layers = [threshold_and_renormalize(layer, threshold, tool_ffn_quirk=tool_compatible) for layer in layers]
    elif threshold is not None and tool_compatible:  # the tool builds its "unrenormalized" graph with threshold 0
        layers = [threshold_and_renormalize(layer, 0.0, tool_ffn_quirk=True) for layer in layers]
        walk_threshold = threshold
    elif threshold is not None:
        walk_threshold = threshold
    graph = full_graph(layers, per_head=per_head, tokens=tokens)
    if position is None:
        return graph
    target = position % n
    return routes_to(graph, _node("I", n_layers - 1, target), walk_threshold)
