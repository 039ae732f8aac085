"""A wrong path in any adapter field raises a clear error naming the field and the path, and leaves no hook behind."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import inseq_mixing.extract as extract
from inseq_mixing import ExtractionError, context_mixing
from inseq_mixing.extract import ADAPTERS, Adapter, EncoderDecoderAdapter, FFNParts, get_adapter, recording

from .._helpers import sample_inputs, tiny_model

BAD = "no_such.module"
PATH_FIELDS = {
    "blocks": BAD,
    "attention": BAD,
    "value": BAD,
    "output_proj": BAD,
    "norm1": BAD,
    "norm2": BAD,
    "ffn": (BAD,),
    "final_norm": BAD,
    "residual_source": (BAD, "input"),
    "output_source": (BAD, "output"),
    "query": BAD,
    "key": BAD,
    "post_attention_norm": BAD,
    "post_ffn_norm": BAD,
    "ffn_parts": FFNParts(gate=BAD, act=BAD, out=BAD),
}
"""Every field of :class:`Adapter` that names a module, with a value naming none."""

FAMILIES = {"bert": "post-LN", "gpt2": "pre-LN", "gptj": "parallel", "bart": "encoder-decoder"}


def test_every_path_field_is_covered() -> None:
    """The table above lists every module-path field the adapter declares (a new field must be added here)."""
    fields = {f.name for f in dataclasses.fields(Adapter)}
    not_paths = {
        "family", "norm_kind", "layout", "is_causal", "norm_eps_attr", "norm_weight_offset", "value_split",
        "weights_index", "ffn_is_per_token", "is_cross_attention", "strip_requested_weights", "scaling_attr",
        "position_kind", "position_offset",
        "classifier",  # read only for sequence classifiers: its bad paths are tested in tests/prediction
    }  # fmt: skip
    assert fields - not_paths == set(PATH_FIELDS)


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _cases() -> list[tuple[str, str | None, str]]:
    cases = []
    for model_type in FAMILIES:
        views = ("encoder", "decoder", "cross") if isinstance(ADAPTERS[model_type], EncoderDecoderAdapter) else (None,)
        # A decoder's self-attention view continues into the cross-attention: it has no FFN parts to read.
        cases += [(model_type, view, f) for view in views for f in PATH_FIELDS if (view, f) != ("decoder", "ffn_parts")]
    return cases


@pytest.mark.parametrize(("model_type", "view", "field"), _cases())
def test_bad_path_names_field_and_path_and_leaves_no_hook(
    model_type: str, view: str | None, field: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = tiny_model(model_type)
    adapter = get_adapter(model)
    if view is None:
        broken = dataclasses.replace(adapter, **{field: PATH_FIELDS[field]})
    else:
        broken = dataclasses.replace(
            adapter, **{view: dataclasses.replace(getattr(adapter, view), **{field: PATH_FIELDS[field]})}
        )
    monkeypatch.setitem(extract.ADAPTERS, model_type, broken)
    kwargs = {"decoder_input_ids": sample_inputs(model, seq=4)} if view else {}
    before = _hooks(model)
    with pytest.raises(ExtractionError) as error:
        if field == "ffn_parts":  # read only when a measure decomposes through the FFN
            with recording(model, broken, lambda record: None, record_ffn=True):
                model.base_model(input_ids=sample_inputs(model), **kwargs)
        else:
            context_mixing(model, sample_inputs(model), "alti", **kwargs)
    message = str(error.value)
    assert f"'{field}'" in message and BAD in message and type(model).__name__ in message
    assert _hooks(model) == before
    monkeypatch.undo()
    context_mixing(model, sample_inputs(model), "alti", **kwargs)  # the model still works
