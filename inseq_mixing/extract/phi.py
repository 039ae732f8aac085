"""Phi (1, 1.5, 2) and Phi-3.

Phi: parallel blocks sharing one LayerNorm, partial rotary embeddings (positions only change the weights).
Phi-3: Llama-like pre-RMSNorm blocks with a fused ``qkv_proj`` laid out ``[q | k | v]`` with grouped-query sizes,
and a fused ``gate_up_proj`` inside the MLP.
"""

from dataclasses import replace

from torch import Tensor

from ._adapter import Adapter, FFNParts
from .llama import LLAMA

PHI = Adapter(
    family="Phi",
    blocks="layers",
    attention="self_attn",
    value="self_attn.v_proj",
    output_proj="self_attn.dense",
    norm1="input_layernorm",
    norm2="input_layernorm",
    ffn=("mlp",),
    ffn_parts=FFNParts(gate="mlp.fc1", act="mlp.activation_fn", out="mlp.fc2"),
    norm_kind="layer",
    layout="parallel",
    is_causal=True,
    final_norm="final_layernorm",
)


def split_qkv_gqa(fused: Tensor, n_heads: int, d_head: int) -> Tensor:
    """Return the value part ``[batch, seq, kv_heads·d_head]`` of a fused ``[q | k | v]`` grouped-query output."""
    kv_width = (fused.shape[-1] - n_heads * d_head) // 2
    return fused[..., n_heads * d_head + kv_width :]


PHI3 = replace(
    LLAMA,
    family="Phi-3",
    value="self_attn.qkv_proj",
    value_split=split_qkv_gqa,
    ffn_parts=FFNParts(gate="mlp.gate_up_proj", act="mlp.activation_fn", out="mlp.down_proj", fused_gate_up=True),
)
