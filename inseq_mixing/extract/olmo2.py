"""OLMo 2: a decoder without pre-norms whose attention and FFN outputs are RMS-normalized before being added.

``m = x + RMS_A(Attn(x))``, ``out = m + RMS_F(FFN(m))``: attention and FFN read the stream itself, and no norm
follows a residual addition (the q/k norms act before the attention weights are read).
"""

from ._adapter import Adapter

OLMO2 = Adapter(
    family="OLMo 2",
    blocks="layers",
    attention="self_attn",
    value="self_attn.v_proj",
    output_proj="self_attn.o_proj",
    norm1=None,
    norm2=None,
    post_attention_norm="post_attention_layernorm",
    post_ffn_norm="post_feedforward_layernorm",
    ffn=("mlp",),
    norm_kind="rms",
    pre_norm=True,
    is_causal=True,
    final_norm="norm",
    norm_eps_attr="variance_epsilon",
)
