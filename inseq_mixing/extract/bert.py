"""BERT, RoBERTa and ELECTRA: post-LN encoders, separate q/k/v projections, output projection in ``attention.output``.

ELECTRA's ``embeddings_project`` (embedding size ≠ hidden size) runs before the first block, so its blocks are BERT's.
"""

from dataclasses import replace

import torch

from ._adapter import Adapter, ClassifierHead, ClassifierStep, FFNParts

BERT = Adapter(
    family="BERT",
    blocks="encoder.layer",
    attention="attention.self",
    value="attention.self.value",
    output_proj="attention.output.dense",
    norm1="attention.output.LayerNorm",
    norm2="output.LayerNorm",
    ffn=("intermediate", "output.dense"),
    ffn_parts=FFNParts(gate="intermediate.dense", act="intermediate.intermediate_act_fn", out="output.dense"),
    norm_kind="layer",
    layout="post_ln",
    is_causal=False,
    position_kind="absolute",
    classifier=ClassifierHead(
        (ClassifierStep("bert.pooler.dense", "bert.pooler.activation"), ClassifierStep("classifier"))
    ),
)

ROBERTA = replace(
    BERT,
    family="RoBERTa",
    position_offset=2,  # positions count from pad_token_id + 1
    classifier=ClassifierHead(  # RobertaClassificationHead: dense, torch.tanh (inline), out_proj
        (ClassifierStep("classifier.dense", lambda config: torch.tanh), ClassifierStep("classifier.out_proj"))
    ),
)

ELECTRA = replace(
    BERT,
    family="ELECTRA",
    classifier=ClassifierHead(
        (ClassifierStep("classifier.dense", "classifier.activation"), ClassifierStep("classifier.out_proj"))
    ),
)
