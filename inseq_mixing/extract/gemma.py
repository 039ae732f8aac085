"""Gemma, Gemma 2 and Gemma 3: pre-RMSNorm decoders whose norms store ``γ − 1`` (they scale by ``1 + weight``).

Gemma is Llama-shaped. Gemma 2 and 3 also normalize the attention and FFN outputs before each residual addition
(``post_attention_layernorm``, ``post_feedforward_layernorm``) and read the FFN through ``pre_feedforward_layernorm``.
Embedding scaling, the q/k norms of Gemma 3 and the attention scale all act before the attention weights and values
are read, so they need nothing here. Attention logit soft-capping (Gemma 2) changes only the weights, which are read
as returned.
"""

from dataclasses import replace

from .llama import LLAMA

GEMMA = replace(LLAMA, family="Gemma", norm_eps_attr="eps", norm_weight_offset=1.0)

GEMMA2 = replace(
    GEMMA,
    family="Gemma 2",
    norm2="pre_feedforward_layernorm",
    post_attention_norm="post_attention_layernorm",
    post_ffn_norm="post_feedforward_layernorm",
)

GEMMA3 = replace(GEMMA2, family="Gemma 3")
