"""GPT-2: pre-LN decoder with a fused q/k/v ``Conv1D`` projection."""

from torch import Tensor

from ._adapter import Adapter, FFNParts


def split_thirds(fused: Tensor, n_heads: int, d_head: int) -> Tensor:
    """Return the value third of a fused ``[q | k | v]`` projection output."""
    return fused[..., 2 * n_heads * d_head : 3 * n_heads * d_head]


GPT2 = Adapter(
    family="GPT-2",
    blocks="h",
    attention="attn",
    value="attn.c_attn",
    value_split=split_thirds,
    output_proj="attn.c_proj",
    norm1="ln_1",
    norm2="ln_2",
    ffn=("mlp",),
    ffn_parts=FFNParts(gate="mlp.c_fc", act="mlp.act", out="mlp.c_proj"),
    norm_kind="layer",
    layout="pre_ln",
    position_kind="absolute",
    is_causal=True,
    final_norm="ln_f",
)
