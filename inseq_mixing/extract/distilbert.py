"""DistilBERT: post-LN encoder whose attention module includes the output projection."""

import torch

from ._adapter import Adapter, ClassifierHead, ClassifierStep, FFNParts

DISTILBERT = Adapter(
    family="DistilBERT",
    blocks="transformer.layer",
    attention="attention",
    value="attention.v_lin",
    output_proj="attention.out_lin",
    norm1="sa_layer_norm",
    norm2="output_layer_norm",
    ffn=("ffn",),
    ffn_parts=FFNParts(gate="ffn.lin1", act="ffn.activation", out="ffn.lin2"),
    norm_kind="layer",
    layout="post_ln",
    position_kind="absolute",
    classifier=ClassifierHead(  # pre_classifier, then nn.ReLU() applied inline, then classifier
        (ClassifierStep("pre_classifier", lambda config: torch.relu), ClassifierStep("classifier"))
    ),
    is_causal=False,
)
