"""Llama, Mistral and Qwen2: pre-RMSNorm decoders with rotary positions and grouped-query attention."""

from ._adapter import Adapter, FFNParts

LLAMA = Adapter(
    family="Llama / Mistral / Qwen2",
    blocks="layers",
    attention="self_attn",
    value="self_attn.v_proj",
    output_proj="self_attn.o_proj",
    norm1="input_layernorm",
    norm2="post_attention_layernorm",
    ffn=("mlp",),
    ffn_parts=FFNParts(gate="mlp.gate_proj", up="mlp.up_proj", act="mlp.act_fn", out="mlp.down_proj"),
    norm_kind="rms",
    layout="pre_ln",
    is_causal=True,
    final_norm="norm",
    norm_eps_attr="variance_epsilon",
)
