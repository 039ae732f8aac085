"""BART and Marian (post-LN), mBART and M2M100/NLLB (pre-LN): encoder-decoders with the same module names."""

from ._adapter import Adapter, EncoderDecoderAdapter, FFNParts

_FFN = ("fc1", "activation_fn", "fc2")
_FFN_PARTS = FFNParts(gate="fc1", act="activation_fn", out="fc2")


def bart_family(family: str, *, pre_norm: bool) -> EncoderDecoderAdapter:
    """The three views of a BART-style model; pre-LN variants also have a final norm on each stack."""
    # Learned (BART, mBART) or fixed sinusoidal (Marian) tables of max_position_embeddings rows.
    layout = "pre_ln" if pre_norm else "post_ln"
    common = {"norm_kind": "layer", "layout": layout, "value_split": None, "position_kind": "absolute"}
    encoder = Adapter(
        family=family,
        blocks="encoder.layers",
        attention="self_attn",
        value="self_attn.v_proj",
        output_proj="self_attn.out_proj",
        norm1="self_attn_layer_norm",
        norm2="final_layer_norm",
        ffn=_FFN,
        ffn_parts=_FFN_PARTS,
        is_causal=False,
        final_norm="encoder.layer_norm" if pre_norm else None,
        **common,
    )
    decoder = Adapter(
        family=family,
        blocks="decoder.layers",
        attention="self_attn",
        value="self_attn.v_proj",
        output_proj="self_attn.out_proj",
        norm1="self_attn_layer_norm",
        norm2="encoder_attn_layer_norm",
        ffn=("encoder_attn",),
        ffn_is_per_token=False,
        output_source=("final_layer_norm", "input") if pre_norm else ("encoder_attn_layer_norm", "output"),
        is_causal=True,
        **common,
    )
    cross = Adapter(
        family=family,
        blocks="decoder.layers",
        attention="encoder_attn",
        value="encoder_attn.v_proj",
        output_proj="encoder_attn.out_proj",
        norm1="encoder_attn_layer_norm",
        norm2="final_layer_norm",
        ffn=_FFN,
        ffn_parts=_FFN_PARTS,
        residual_source=("encoder_attn_layer_norm", "input") if pre_norm else ("self_attn_layer_norm", "output"),
        is_cross_attention=True,
        query="encoder_attn.q_proj",
        key="encoder_attn.k_proj",
        scaling_attr="scaling",
        is_causal=True,
        final_norm="decoder.layer_norm" if pre_norm else None,
        **common,
    )
    return EncoderDecoderAdapter(family=family, encoder=encoder, decoder=decoder, cross=cross)


BART = bart_family("BART / Marian", pre_norm=False)
MBART = bart_family("mBART / M2M100 / NLLB", pre_norm=True)
