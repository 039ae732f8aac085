"""The supported-architectures page, generated from :data:`inseq_mixing.extract.ADAPTERS` and the measure table."""

from __future__ import annotations

from collections.abc import Mapping

from .extract import Adapter, AdapterChoice, EncoderDecoderAdapter
from .mixing import METHODS


def block_form(adapter: Adapter) -> str:
    """How a block is wired: post-LN, pre-LN or parallel, and its extra norms."""
    return adapter.form.describe()


def norm_kind(adapter: Adapter) -> str:
    """The normalization layers' kind."""
    kind = "LayerNorm" if adapter.norm_kind == "layer" else "RMSNorm"
    return f"{kind} (1+γ)" if adapter.norm_weight_offset else kind


def deviations(adapter: Adapter) -> list[str]:
    """Where the measures' definition had to be adapted to this block form (all measures stay exact)."""
    notes = adapter.form.deviations()
    if adapter.value_split is not None:
        notes.append("values are read from the fused q/k/v projection")
    return notes


def ffn_form(adapter: Adapter) -> str:
    """What the FFN record holds for this family (the parts measures through the FFN decompose), or what is missing."""
    if adapter.ffn_parts is None:
        return "not declared (no measure through the FFN)"
    layouts = adapter.ffn_parts if isinstance(adapter.ffn_parts, tuple) else (adapter.ffn_parts,)
    words = []
    for parts in layouts:
        if parts.fused_gate_up:
            words.append("gated, fused gate/up")
        else:
            words.append("gated: act(gate) ⊙ up" if parts.up is not None else "plain: act(W_in h)")
    return " or ".join(dict.fromkeys(words))


def architecture_rows(
    adapters: Mapping[str, Adapter | EncoderDecoderAdapter | AdapterChoice],
) -> list[tuple[str, ...]]:
    """One row per model type (and per config-selected variant): model type cell, family, kind, block, norm, FFN,
    notes."""
    rows = []
    expanded = []
    for model_type, adapter in sorted(adapters.items()):
        if isinstance(adapter, AdapterChoice):
            expanded += [(f"`{model_type}` ({setting})", variant) for setting, variant in adapter.variants]
        else:
            expanded.append((f"`{model_type}`", adapter))
    for model_type, adapter in expanded:
        if isinstance(adapter, EncoderDecoderAdapter):
            notes = ["ALTI+ rollout over source and target", *deviations(adapter.encoder)]
            notes.append("value zeroing of the decoder self-attention recomputes the cross-attention")
            encoder = adapter.encoder
            rows.append((model_type, adapter.family, "encoder-decoder", block_form(encoder), norm_kind(encoder),
                         ffn_form(encoder), "; ".join(dict.fromkeys(notes))))  # fmt: skip
        else:
            kind = "decoder" if adapter.is_causal else "encoder"
            rows.append((model_type, adapter.family, kind, block_form(adapter), norm_kind(adapter), ffn_form(adapter),
                         "; ".join(deviations(adapter))))  # fmt: skip
    return rows


def architectures_markdown(adapters: Mapping[str, Adapter | EncoderDecoderAdapter | AdapterChoice]) -> str:
    """The docs page listing every supported architecture."""
    lines = [
        "# Supported architectures",
        "",
        "<!-- Generated from inseq_mixing.extract.ADAPTERS by `python docs/gen_architectures.py`; do not edit. -->",
        "",
        f"Every measure ({', '.join(METHODS)}) is exact on every model type below: each layer's decomposition is "
        "checked against the modules' real outputs while the model runs, and the tests check every measure against its "
        "definition on a tiny random model of each type. Any other model raises `UnsupportedArchitectureError` "
        "listing these types. The FFN column says how the feed-forward network is recorded for measures that "
        "decompose through it (its parts are verified against the module's output like the attention).",
        "",
        "| `model_type` | family | kind | block | norm | FFN | notes |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {t} | {family} | {kind} | {block} | {norm} | {ffn} | {notes} |"
              for t, family, kind, block, norm, ffn, notes in architecture_rows(adapters)]  # fmt: skip
    return "\n".join(lines) + "\n" + ADDING_AN_ARCHITECTURE


ADDING_AN_ARCHITECTURE = """
## Encoder-decoder models

An `EncoderDecoderAdapter` declares three views of the model, each an `Adapter`: the encoder blocks; the decoder's
self-attention, whose "FFN" is the cross-attention that follows it; and the cross-attention, whose residual is the
decoder stream after self-attention (`residual_source`) and whose keys are the source tokens
(`is_cross_attention=True`: measures report the residual as an extra last column). Every view is checked like a
single-stack model. For value zeroing of the decoder's self-attention, the cross-attention is recomputed for the
changed queries from the recorded keys and values (`query`, `key`, `scaling_attr`), after checking that the
recomputation reproduces the recorded output.

## Adding an architecture

An adapter declares where the canonical parts live; generic hooks do the rest. Register it for your model's
`config.model_type`, outside the package:

```python
from inseq_mixing import Adapter, register_adapter

register_adapter(
    "gpt_neo",
    Adapter(
        family="GPT-Neo",
        blocks="h",  # relative to model.base_model
        attention="attn.attention",  # its forward returns (output, attention_weights)
        value="attn.attention.v_proj",
        output_proj="attn.attention.out_proj",
        norm1="ln_1",  # pre-LN: the norm the attention reads
        norm2="ln_2",  # the norm the FFN reads
        ffn=("mlp",),
        norm_kind="layer",
        layout="pre_ln",
        is_causal=True,
    ),
)
```

If the declaration is wrong, the first forward raises `DecompositionError` naming the failing check
(`tests/extract/test_custom_adapter.py` runs exactly this example).
"""
