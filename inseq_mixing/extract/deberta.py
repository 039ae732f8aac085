"""DeBERTa-v2/v3: post-LN encoder with BERT's block layout and disentangled (relative-position) attention.

Content-to-position and position-to-content terms only change the attention scores; the returned probabilities
(``attention.self``, which takes ``output_attentions``) still mix the ``value_proj`` vectors of the tokens, and the
output projection and norms sit where BERT has them. Checkpoints with ``conv_kernel_size > 0`` (DeBERTa-v2
xlarge/xxlarge) mix tokens with a convolution between the first and second block, outside any block, which no
per-block decomposition sees: they raise :class:`UnsupportedArchitectureError`.
"""

from dataclasses import replace

from transformers import PretrainedConfig
from transformers.activations import ACT2FN

from ..errors import UnsupportedArchitectureError
from ._adapter import Adapter, AdapterChoice, ClassifierHead, ClassifierStep
from .bert import BERT

DEBERTA_V2 = replace(
    BERT,
    family="DeBERTa-v2 / v3",
    value="attention.self.value_proj",
    position_kind="relative",
    classifier=ClassifierHead(  # ContextPooler: dense, then ACT2FN[config.pooler_hidden_act] inline; classifier
        (ClassifierStep("pooler.dense", lambda config: ACT2FN[config.pooler_hidden_act]), ClassifierStep("classifier"))
    ),
)


def deberta_v2_for(config: PretrainedConfig) -> Adapter:
    """DeBERTa-v2/v3 without the token-mixing convolution."""
    if getattr(config, "conv_kernel_size", 0):
        raise UnsupportedArchitectureError(
            f"DeBERTa-v2 with conv_kernel_size={config.conv_kernel_size} mixes tokens with a convolution outside the "
            "blocks, which the decomposition cannot account for; supported: conv_kernel_size=0 (e.g. DeBERTa-v3)."
        )
    return DEBERTA_V2


DEBERTA_V2_CHOICE = AdapterChoice(
    family="DeBERTa-v2 / v3", choose=deberta_v2_for, variants=(("conv_kernel_size=0", DEBERTA_V2),)
)
