"""Information-flow routes: the reference tool's graphs, a hand-built model, naive edge weights, thresholds."""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest
import torch
from transformers import GPT2LMHeadModel

from inseq_mixing import InvalidInputError
from inseq_mixing.information_flow import flow_contributions, routes

from ._helpers import REFERENCE_DIR, collect_records, sample_inputs
from ._tiny_models import CAUSAL_TYPES, build_tiny_model

GOLDEN = REFERENCE_DIR / "routes"
CASES = ("public_0", "public_1", "public_2")
GRAPHS = {
    "full": {"position": None, "threshold": None},
    "full_thr": {"position": None},
    "routes": {},
    "routes_no_renormalize": {"renormalize": False},
}


@pytest.fixture(scope="module")
def golden_model() -> GPT2LMHeadModel:
    return GPT2LMHeadModel.from_pretrained(GOLDEN / "models" / "tiny-gpt2-seed11").eval()


def edges(graph: nx.DiGraph) -> dict[tuple[str, str], float]:
    return {(u, v): data["weight"] for u, v, data in graph.edges(data=True)}


@pytest.mark.parametrize("variant", ["paper_exact", "tool"])
@pytest.mark.parametrize("graph", sorted(GRAPHS))
@pytest.mark.parametrize("case", CASES)
def test_graphs_match_the_reference_tool(golden_model, case: str, graph: str, variant: str) -> None:
    sidecar = json.loads((GOLDEN / f"tiny-gpt2-seed11__{case}.json").read_text())
    ids = torch.tensor(sidecar["input_ids"])[None]
    ours = edges(routes(golden_model, ids, tool_compatible=variant == "tool", **GRAPHS[graph]))
    theirs = {(u, v): w for u, v, w in sidecar["variants"][variant][graph]}
    for key in set(ours) | set(theirs):  # an absent edge weighs 0
        assert abs(ours.get(key, 0.0) - theirs.get(key, 0.0)) <= 1e-4, key
    if graph.startswith("routes"):  # routes are edge sets: exactly the same edges
        assert set(ours) == {key for key, weight in theirs.items() if weight > 0}


@pytest.mark.parametrize("case", CASES)
def test_contributions_match_the_reference_arrays(golden_model, case: str) -> None:
    data = np.load(GOLDEN / f"tiny-gpt2-seed11__{case}.npz")
    flow = flow_contributions(golden_model, torch.tensor(data["input_ids"])[None])
    for ours, key in ((flow.attention, "attn_per_head"), (flow.residual_attention, "resid_attn"),
                      (flow.ffn, "ffn"), (flow.residual_ffn, "resid_ffn")):  # fmt: skip
        np.testing.assert_allclose(ours[0].numpy(), data[f"paper_exact__{key}"], atol=1e-4, rtol=0)


def _l1_share(whole: torch.Tensor, parts: list[torch.Tensor]) -> list[torch.Tensor]:
    scores = [(whole.abs().sum() - (whole - p).abs().sum()).clamp_min(0) for p in parts]
    total = sum(scores)
    return [s / total for s in scores]


@pytest.mark.parametrize("model_type", ["gpt2", "llama", "gemma2", "gptj"])
def test_edge_weights_equal_the_definition_recomputed_naively(model_type: str) -> None:
    model = build_tiny_model(model_type, head="causal_lm")
    ids = sample_inputs(model, batch=1, seq=5)
    flow = flow_contributions(model, ids)
    for record in collect_records(model.base_model, ids):
        added = record.attention.output if record.post_attention_norm is None else record.post_attention_norm.output
        middle = (record.residual + added)[0].double()
        f = record.attention  # per head parts, materialized: [query, key, head, d]
        alpha = f.alpha[0].double()
        values_hkd = torch.einsum("hke,hed->hkd", f.values[0].double(), f.w_o.double())
        for i in range(ids.shape[1]):
            parts = [alpha[h, i, j] * values_hkd[h, j] for j in range(ids.shape[1]) for h in range(alpha.shape[0])]
            if record.post_attention_norm is not None:  # the post-attention norm linearized at the real output
                norm = record.post_attention_norm
                sigma = norm.input[0, i].double().pow(2).mean().add(norm.eps).sqrt()
                parts = [p * norm.weight.double() / sigma for p in parts]
            shares = _l1_share(middle[i], [*parts, record.residual[0, i].double()])
            got = flow.attention[0, record.layer_idx, i].double().reshape(-1)  # [key, head] flattened like parts
            torch.testing.assert_close(got, torch.stack(shares[:-1]), atol=2e-5, rtol=1e-4)
            torch.testing.assert_close(flow.residual_attention[0, record.layer_idx, i].double(), shares[-1],
                                       atol=2e-5, rtol=1e-4)  # fmt: skip


def test_a_hand_built_one_layer_model() -> None:
    """One head, d_model 2, two tokens, every weight set by hand; the routes' edges computed on paper."""
    from transformers import GPT2Config

    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=1, n_embd=2, vocab_size=4, n_positions=4,
                                       layer_norm_epsilon=0.0, activation_function="relu")).eval()  # fmt: skip
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        block = model.transformer.h[0]
        model.transformer.wte.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, 0.0]]))
        for norm in (block.ln_1, block.ln_2, model.transformer.ln_f):
            norm.weight.fill_(1.0)
        block.attn.c_attn.weight[:, 4:6] = torch.eye(2)  # values = ln_1(x); queries and keys 0: uniform attention
        block.attn.c_proj.weight.copy_(torch.eye(2))
        block.mlp.c_fc.weight[:, :2] = torch.eye(2)  # the FFN: relu(h) back through the identity
        block.mlp.c_proj.weight[:2] = torch.eye(2)
    ids = torch.tensor([[0, 3]])
    # x0 = [1, 0], x1 = [2, 0]; ln_1 (ε = 0): [1, −1] for both; uniform causal attention: token 1 reads
    # p_0 = p_1 = 0.5·[1, −1]; m_1 = x1 + [1, −1] = [3, −1], ‖m_1‖₁ = 4.
    # c(p_j) = 4 − ‖[3, −1] − [0.5, −0.5]‖₁ = 4 − 3 = 1 for each key; c(x_1) = 4 − ‖[1, −1]‖₁ = 2: shares ¼, ¼, ½.
    graph = routes(model, ids, position=None, threshold=None)
    assert graph["X0_0"]["A0_1"]["weight"] == pytest.approx(0.25)
    assert graph["X0_1"]["A0_1"]["weight"] == pytest.approx(0.25 + 0.5)
    # FFN at token 1: ln_2(m_1) = [1, −1] (mean 1, σ = 2), relu → [1, 0]; out = [4, −1], ‖out‖₁ = 5:
    # c(F) = 5 − ‖[3, −1]‖₁ = 1, c(m) = 5 − ‖[1, 0]‖₁ = 4: shares 0.2 and 0.8.
    assert graph["A0_1"]["M0_1"]["weight"] == pytest.approx(0.2)
    assert graph["A0_1"]["I0_1"]["weight"] == pytest.approx(0.8)
    kept = routes(model, ids, threshold=0.3)  # parts ≤ 0.3 dropped: both attention parts (¼) and the FFN (0.2)
    assert set(kept.edges) == {("X0_1", "A0_1"), ("A0_1", "I0_1")}
    assert kept["X0_1"]["A0_1"]["weight"] == pytest.approx(1.0) == kept["A0_1"]["I0_1"]["weight"]


def test_node_and_edge_counts_and_per_head_edges() -> None:
    model = build_tiny_model("gpt2", head="causal_lm")
    ids = sample_inputs(model, batch=1, seq=5)
    full = routes(model, ids, position=None, threshold=None)
    n, n_layers = 5, model.config.n_layer
    assert full.number_of_nodes() == n * (1 + 3 * n_layers)
    assert full.number_of_edges() == n_layers * (n * (n + 1) // 2 + 3 * n)  # causal attention edges + 3 FFN edges
    per_head = routes(model, ids, position=None, threshold=None, per_head=True)
    assert isinstance(per_head, nx.MultiDiGraph)
    heads = {data["head"] for _, _, data in per_head.edges(data=True) if "head" in data}
    assert heads == set(range(model.config.n_head))
    strict = routes(model, ids, threshold=0.2)
    loose = routes(model, ids, threshold=0.01)
    assert set(strict.edges) <= set(loose.edges) or strict.number_of_edges() < loose.number_of_edges()
    assert all(data["weight"] > 0 for _, _, data in strict.edges(data=True))


def test_padded_rows_give_the_graph_of_the_sequence_alone() -> None:
    model = build_tiny_model("llama", head="causal_lm")
    ids = sample_inputs(model, batch=2, seq=6)
    mask = torch.ones_like(ids)
    mask[1, :2], ids[1, :2] = 0, 0
    padded = edges(routes(model, ids, attention_mask=mask, batch_index=1))
    alone = edges(routes(model, ids[1:, 2:]))
    assert padded.keys() == alone.keys()
    assert all(abs(padded[k] - alone[k]) < 1e-5 for k in padded)


@pytest.mark.parametrize("model_type", [t for t in CAUSAL_TYPES if t != "opt"])
def test_every_pre_ln_and_parallel_decoder_family(model_type: str) -> None:
    model = build_tiny_model(model_type, head="causal_lm")
    flow = flow_contributions(model, sample_inputs(model, batch=1, seq=5))
    totals = flow.attention.sum(dim=(-1, -2)) + flow.residual_attention
    torch.testing.assert_close(totals, torch.ones_like(totals))
    torch.testing.assert_close(flow.ffn + flow.residual_ffn, torch.ones_like(flow.ffn))


def test_post_ln_blocks_get_a_clear_error() -> None:
    model = build_tiny_model("opt", head="causal_lm", do_layer_norm_before=False)
    with pytest.raises(InvalidInputError, match="add to one residual stream"):
        routes(model, sample_inputs(model))
