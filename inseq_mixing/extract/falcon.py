"""Falcon: parallel attention and FFN with a fused ``query_key_value`` projection.

Every layout groups the query heads sharing a key/value head as ``[q_1 … q_g | k | v]``: multi-query (Falcon-7B:
one group of all heads), multi-head (one query per group) and ``new_decoder_architecture`` (Falcon-40B/180B:
``num_kv_heads`` groups). The latter reads the attention and the FFN through two norms (``ln_attn``, ``ln_mlp``):
:data:`FALCON_TWO_NORMS` is chosen for it. Falcon-RW (``parallel_attn=False``, ALiBi) is not covered.
``FalconDecoderLayer`` adds the attention output in place to the MLP output; the recorder keeps copies.
"""

from dataclasses import replace

from torch import Tensor
from transformers import PretrainedConfig

from ..errors import UnsupportedArchitectureError
from ._adapter import Adapter, AdapterChoice, FFNParts


def split_falcon(fused: Tensor, n_heads: int, d_head: int) -> Tensor:
    """Return the values ``[batch, seq, kv_heads, d_head]`` of Falcon's grouped ``[q… | k | v]`` fused output."""
    n_kv_heads = (fused.shape[-1] // d_head - n_heads) // 2
    return fused.view(*fused.shape[:-1], n_kv_heads, n_heads // n_kv_heads + 2, d_head)[..., -1, :]


FALCON = Adapter(
    family="Falcon",
    blocks="h",
    attention="self_attention",
    value="self_attention.query_key_value",
    value_split=split_falcon,
    output_proj="self_attention.dense",
    norm1="input_layernorm",
    norm2="input_layernorm",
    ffn=("mlp",),
    ffn_parts=FFNParts(gate="mlp.dense_h_to_4h", act="mlp.act", out="mlp.dense_4h_to_h"),
    norm_kind="layer",
    layout="parallel",
    is_causal=True,
    final_norm="ln_f",
)

FALCON_TWO_NORMS = replace(FALCON, norm1="ln_attn", norm2="ln_mlp")
"""Falcon with ``new_decoder_architecture`` and ``num_ln_in_parallel_attn=2`` (Falcon-40B/180B)."""


def falcon_for(config: PretrainedConfig) -> Adapter:
    """The Falcon layout of ``config``: one shared norm, or two (``new_decoder_architecture``, two norms)."""
    if not getattr(config, "parallel_attn", True):
        raise UnsupportedArchitectureError(
            "Falcon with parallel_attn=False (Falcon-RW) is not supported; supported: parallel-attention Falcon."
        )
    two_norms = getattr(config, "new_decoder_architecture", False) and getattr(config, "num_ln_in_parallel_attn", 2)
    return FALCON_TWO_NORMS if two_norms == 2 else FALCON


FALCON_CHOICE = AdapterChoice(
    family="Falcon",
    choose=falcon_for,
    variants=(("parallel_attn, one norm", FALCON), ("new_decoder_architecture with two norms", FALCON_TWO_NORMS)),
)
