"""Gemma, Gemma 2 and Gemma 3: pre-RMSNorm decoders whose norms store ``γ − 1`` (they scale by ``1 + weight``).

Gemma is Llama-shaped. Gemma 2 and 3 also normalize the attention and FFN outputs before each residual addition
(``post_attention_layernorm``, ``post_feedforward_layernorm``) and read the FFN through ``pre_feedforward_layernorm``.
Embedding scaling, the q/k norms of Gemma 3 and the attention scale all act before the attention weights and values
are read, so they need nothing here. Attention logit soft-capping (Gemma 2) changes only the weights, which are read
as returned.
"""

from dataclasses import replace

from ._adapter import Adapter

GEMMA = Adapter(
    family="Gemma",
    blocks="layers",
    attention="self_attn",
    value="self_attn.v_proj",
    output_proj="self_attn.o_proj",
    norm1="input_layernorm",
    norm2="post_attention_layernorm",
    ffn=("mlp",),
    norm_kind="rms",
    pre_norm=True,
    is_causal=True,
    final_norm="norm",
    norm_eps_attr="eps",
    norm_weight_offset=1.0,
)

GEMMA2 = replace(
    GEMMA,
    family="Gemma 2",
    norm2="pre_feedforward_layernorm",
    post_attention_norm="post_attention_layernorm",
    post_ffn_norm="post_feedforward_layernorm",
)

GEMMA3 = replace(GEMMA2, family="Gemma 3")
