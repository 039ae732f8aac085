"""T5 and mT5: pre-RMSNorm encoder-decoders without biases, with relative position bias (weights are output[2])."""

from ._adapter import Adapter, EncoderDecoderAdapter, FFNParts

_COMMON = {
    "norm_kind": "rms",
    "layout": "pre_ln",
    "norm_eps_attr": "variance_epsilon",
    "weights_index": 2,
    "strip_requested_weights": True,
    "position_kind": "relative",
}


def _ffn_parts(dense: str) -> tuple[FFNParts, FFNParts]:
    """T5's plain FFN (``wi → act → wo``) or mT5 / T5 v1.1's gated one (``act(wi_0) ⊙ wi_1 → wo``)."""
    plain = FFNParts(gate=f"{dense}.wi", act=f"{dense}.act", out=f"{dense}.wo")
    gated = FFNParts(gate=f"{dense}.wi_0", up=f"{dense}.wi_1", act=f"{dense}.act", out=f"{dense}.wo")
    return plain, gated


T5 = EncoderDecoderAdapter(
    family="T5 / mT5",
    encoder=Adapter(
        family="T5 / mT5",
        blocks="encoder.block",
        attention="layer.0.SelfAttention",
        value="layer.0.SelfAttention.v",
        output_proj="layer.0.SelfAttention.o",
        norm1="layer.0.layer_norm",
        norm2="layer.1.layer_norm",
        ffn=("layer.1.DenseReluDense",),
        ffn_parts=_ffn_parts("layer.1.DenseReluDense"),
        is_causal=False,
        final_norm="encoder.final_layer_norm",
        **_COMMON,
    ),
    decoder=Adapter(
        family="T5 / mT5",
        blocks="decoder.block",
        attention="layer.0.SelfAttention",
        value="layer.0.SelfAttention.v",
        output_proj="layer.0.SelfAttention.o",
        norm1="layer.0.layer_norm",
        norm2="layer.1.layer_norm",
        ffn=("layer.1.EncDecAttention",),
        ffn_is_per_token=False,
        output_source=("layer.2.layer_norm", "input"),
        is_causal=True,
        **_COMMON,
    ),
    cross=Adapter(
        family="T5 / mT5",
        blocks="decoder.block",
        attention="layer.1.EncDecAttention",
        value="layer.1.EncDecAttention.v",
        output_proj="layer.1.EncDecAttention.o",
        norm1="layer.1.layer_norm",
        norm2="layer.2.layer_norm",
        ffn=("layer.2.DenseReluDense",),
        ffn_parts=_ffn_parts("layer.2.DenseReluDense"),
        residual_source=("layer.1.layer_norm", "input"),
        is_cross_attention=True,
        query="layer.1.EncDecAttention.q",
        key="layer.1.EncDecAttention.k",
        is_causal=True,
        final_norm="decoder.final_layer_norm",
        **_COMMON,
    ),
)
