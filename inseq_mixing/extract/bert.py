"""BERT and RoBERTa: post-LN encoders, separate q/k/v projections, output projection in ``attention.output``."""

from ._adapter import Adapter

BERT = Adapter(
    family="BERT / RoBERTa",
    blocks="encoder.layer",
    attention="attention.self",
    value="attention.self.value",
    output_proj="attention.output.dense",
    norm1="attention.output.LayerNorm",
    norm2="output.LayerNorm",
    ffn=("intermediate", "output.dense"),
    norm_kind="layer",
    pre_norm=False,
    is_causal=False,
)
