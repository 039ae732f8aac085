"""OLMo 2: a decoder without pre-norms whose attention and FFN outputs are RMS-normalized before being added.

``m = x + RMS_A(Attn(x))``, ``out = m + RMS_F(FFN(m))``: attention and FFN read the stream itself, and no norm
follows a residual addition (the q/k norms act before the attention weights are read).
"""

from dataclasses import replace

from .llama import LLAMA

OLMO2 = replace(
    LLAMA,
    family="OLMo 2",
    norm1=None,
    norm2=None,
    post_attention_norm="post_attention_layernorm",
    post_ffn_norm="post_feedforward_layernorm",
)
