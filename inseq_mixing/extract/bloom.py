"""BLOOM: pre-LN with ALiBi and a fused ``query_key_value`` projection interleaved per head.

``BloomAttention`` and ``BloomMLP`` add the residual inside the module, so the attention output is read at
``self_attention.dense`` and the FFN is the chain ``dense_h_to_4h → gelu_impl → dense_4h_to_h``.
"""

from ._adapter import Adapter, FFNParts
from .neox import split_per_head_thirds

BLOOM = Adapter(
    family="BLOOM",
    blocks="h",
    attention="self_attention",
    value="self_attention.query_key_value",
    value_split=split_per_head_thirds,
    output_proj="self_attention.dense",
    norm1="input_layernorm",
    norm2="post_attention_layernorm",
    ffn=("mlp.dense_h_to_4h", "mlp.gelu_impl", "mlp.dense_4h_to_h"),
    ffn_parts=FFNParts(gate="mlp.dense_h_to_4h", act="mlp.gelu_impl", out="mlp.dense_4h_to_h"),
    norm_kind="layer",
    layout="pre_ln",
    is_causal=True,
    final_norm="ln_f",
)
