"""GPT-J and CodeGen: parallel blocks where the attention and the FFN share one norm (``ln_1``).

CodeGen fuses q/k/v in one projection split into ``mp_num = 4`` model-parallel chunks, each ordered
``[q | v | k]`` and holding ``heads / 4`` consecutive heads.
"""

from dataclasses import replace

from torch import Tensor

from ._adapter import Adapter, FFNParts

CODEGEN_MP_NUM = 4
"""Number of model-parallel chunks hard-coded in CodeGen's attention."""

GPTJ = Adapter(
    family="GPT-J",
    blocks="h",
    attention="attn",
    value="attn.v_proj",
    output_proj="attn.out_proj",
    norm1="ln_1",
    norm2="ln_1",
    ffn=("mlp",),
    ffn_parts=FFNParts(gate="mlp.fc_in", act="mlp.act", out="mlp.fc_out"),
    norm_kind="layer",
    layout="parallel",
    is_causal=True,
    final_norm="ln_f",
)


def split_codegen(fused: Tensor, n_heads: int, d_head: int) -> Tensor:
    """Return the values ``[batch, seq, mp_num, heads / mp_num, d_head]`` of CodeGen's fused ``qkv_proj`` output."""
    local = n_heads * d_head // CODEGEN_MP_NUM
    chunks = fused.view(*fused.shape[:-1], CODEGEN_MP_NUM, 3 * local)
    return chunks[..., local : 2 * local].unflatten(-1, (n_heads // CODEGEN_MP_NUM, d_head))


CODEGEN = replace(GPTJ, family="CodeGen", value="attn.qkv_proj", value_split=split_codegen)
