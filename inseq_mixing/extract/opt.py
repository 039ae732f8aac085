"""OPT and XGLM: decoders with BART-like module names (``self_attn``, ``fc1``/``fc2``, ``final_layer_norm``).

XGLM is pre-LN with sinusoidal positions. OPT is pre-LN with learned positions (``do_layer_norm_before=True``;
OPT-350m is post-LN: :data:`OPT_POST_LN`). OPT's layer flattens the stream to ``[batch·seq, d]`` before the FFN;
the recorder restores the ``[batch, seq, d]`` shape.
"""

from dataclasses import replace

from transformers import PretrainedConfig

from ._adapter import Adapter, AdapterChoice, FFNParts

XGLM = Adapter(
    family="XGLM",
    blocks="layers",
    attention="self_attn",
    value="self_attn.v_proj",
    output_proj="self_attn.out_proj",
    norm1="self_attn_layer_norm",
    norm2="final_layer_norm",
    ffn=("fc1", "activation_fn", "fc2"),
    ffn_parts=FFNParts(gate="fc1", act="activation_fn", out="fc2"),
    norm_kind="layer",
    layout="pre_ln",
    is_causal=True,
    final_norm="layer_norm",
)

OPT = replace(
    XGLM, family="OPT", blocks="decoder.layers", final_norm="decoder.final_layer_norm", position_kind="absolute"
)

OPT_POST_LN = replace(OPT, layout="post_ln", final_norm=None)
"""OPT with ``do_layer_norm_before=False`` (OPT-350m)."""


def opt_for(config: PretrainedConfig) -> Adapter:
    """Pre-LN OPT, or post-LN for ``do_layer_norm_before=False`` (OPT-350m)."""
    return OPT if getattr(config, "do_layer_norm_before", True) else OPT_POST_LN


OPT_CHOICE = AdapterChoice(
    family="OPT",
    choose=opt_for,
    variants=(("do_layer_norm_before=True", OPT), ("do_layer_norm_before=False (OPT-350m)", OPT_POST_LN)),
)
