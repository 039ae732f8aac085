"""Head tools: patterns match the model's own attention weights; ablation and merging reach every measure."""

from __future__ import annotations

import pytest
import torch
from transformers import PreTrainedModel

from inseq_mixing import context_mixing
from inseq_mixing.extract import get_adapter
from inseq_mixing.extract.heads import active_head_mixes
from inseq_mixing.heads import ablate_heads, attention_patterns, merge_heads, top_attended

from ._helpers import sample_inputs, tiny_model


def hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def n_heads(model: PreTrainedModel) -> int:
    config = model.config
    return getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None) or config.n_heads


def test_patterns_are_the_models_attention_weights(model: PreTrainedModel) -> None:
    ids = sample_inputs(model, batch=1, seq=6)
    impl = model.config._attn_implementation
    model.config._attn_implementation = "eager"
    try:
        with torch.no_grad():
            reference = model(input_ids=ids, output_attentions=True).attentions[1]
    finally:
        model.config._attn_implementation = impl
    torch.testing.assert_close(attention_patterns(model, ids, 1), reference)
    torch.testing.assert_close(attention_patterns(model, ids, 1, head=1), reference[:, 1])
    values, indices = top_attended(model, ids, 1, 1, k=2)
    torch.testing.assert_close(values, reference[:, 1].topk(2, dim=-1).values)
    assert indices.shape == (1, 6, 2)


def test_ablating_every_head_leaves_only_the_residual(model: PreTrainedModel) -> None:
    ids = sample_inputs(model, batch=1, seq=5)
    with ablate_heads(model, {0: list(range(n_heads(model)))}):
        alti = context_mixing(model, ids, "alti")
        norms = context_mixing(model, ids, "attention_norm", normalize=False)
    torch.testing.assert_close(alti[0, 0], torch.eye(5))
    assert norms[0, 0].abs().max() == 0
    assert norms[0, 1].abs().max() > 0


def test_ablation_changes_the_model_and_is_undone(model: PreTrainedModel) -> None:
    ids = sample_inputs(model, batch=1, seq=5)
    before_hooks = hook_count(model)
    with torch.no_grad():
        clean = model.base_model(input_ids=ids).last_hidden_state
    base = context_mixing(model, ids, "globenc")
    with ablate_heads(model, {1: [0]}):
        with torch.no_grad():
            ablated = model.base_model(input_ids=ids).last_hidden_state
        changed = context_mixing(model, ids, "globenc")
    assert (ablated - clean).abs().max() > 1e-4 and (changed - base).abs().max() > 1e-4
    torch.testing.assert_close(context_mixing(model, ids, "globenc"), base)
    assert hook_count(model) == before_hooks


def test_everything_is_restored_after_an_error() -> None:
    model = tiny_model("llama")
    before = hook_count(model)
    with pytest.raises(RuntimeError, match="boom"), ablate_heads(model, {0: [1]}), merge_heads(model, 1, 0, 1):
        raise RuntimeError("boom")
    assert hook_count(model) == before
    assert active_head_mixes(model) == {}
    assert not any(k.startswith("_inseq_mixing") for m in model.modules() for k in vars(m))  # nothing on modules


def test_merged_heads_output_the_interpolation() -> None:
    model = tiny_model("bert")
    ids = sample_inputs(model, batch=1, seq=5)
    projection = get_adapter(model).output_proj
    block = model.base_model.encoder.layer[0]
    module = block.get_submodule(projection)
    seen: dict[str, torch.Tensor] = {}
    handle = module.register_forward_hook(lambda m, args, out: seen.update(inp=args[0], out=out))
    try:
        with torch.no_grad():
            model.base_model(input_ids=ids)
        heads = seen["inp"].unflatten(-1, (n_heads(model), -1))
        expected_heads = heads.clone()
        expected_heads[..., 0, :] = expected_heads[..., 1, :] = 0.25 * heads[..., 0, :] + 0.75 * heads[..., 1, :]
        expected = module(expected_heads.flatten(-2))
        with merge_heads(model, 0, 0, 1, alpha=0.25), torch.no_grad():
            model.base_model(input_ids=ids)
            torch.testing.assert_close(seen["out"], expected)
            context_mixing(model, ids, "alti")  # the decomposition stays exact under the merge
    finally:
        handle.remove()
