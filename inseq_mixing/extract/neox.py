"""GPT-NeoX (Pythia): parallel residual, the attention and the FFN each read the block input through their own norm.

The fused ``query_key_value`` projection is interleaved per head: ``[q_h | k_h | v_h]`` for each head ``h``. Models
with ``use_parallel_residual=False`` are sequential pre-LN blocks (:data:`GPT_NEOX_SEQUENTIAL`).
"""

from dataclasses import replace

from torch import Tensor
from transformers import PretrainedConfig

from ._adapter import Adapter, AdapterChoice, FFNParts


def split_per_head_thirds(fused: Tensor, n_heads: int, d_head: int) -> Tensor:
    """Return the values ``[batch, seq, heads, d_head]`` of a fused projection laid out as ``[head, (q, k, v), d]``."""
    return fused.view(*fused.shape[:-1], n_heads, 3, d_head)[..., 2, :]


GPT_NEOX = Adapter(
    family="GPT-NeoX / Pythia",
    blocks="layers",
    attention="attention",
    value="attention.query_key_value",
    value_split=split_per_head_thirds,
    output_proj="attention.dense",
    norm1="input_layernorm",
    norm2="post_attention_layernorm",
    ffn=("mlp",),
    ffn_parts=FFNParts(gate="mlp.dense_h_to_4h", act="mlp.act", out="mlp.dense_4h_to_h"),
    norm_kind="layer",
    layout="parallel",
    is_causal=True,
    final_norm="final_layer_norm",
)

GPT_NEOX_SEQUENTIAL = replace(GPT_NEOX, layout="pre_ln")
"""GPT-NeoX with ``use_parallel_residual=False``: the FFN's norm reads the stream after attention."""


def gpt_neox_for(config: PretrainedConfig) -> Adapter:
    """Parallel or sequential GPT-NeoX blocks, following ``use_parallel_residual``."""
    return GPT_NEOX if getattr(config, "use_parallel_residual", True) else GPT_NEOX_SEQUENTIAL


GPT_NEOX_CHOICE = AdapterChoice(
    family="GPT-NeoX / Pythia",
    choose=gpt_neox_for,
    variants=(("use_parallel_residual=True", GPT_NEOX), ("use_parallel_residual=False", GPT_NEOX_SEQUENTIAL)),
)
