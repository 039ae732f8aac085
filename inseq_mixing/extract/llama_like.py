"""Llama-like pre-norm decoders with Llama's module paths: Qwen3 (q/k RMSNorms, which only shape the attention
weights) and StableLM (LayerNorm instead of RMSNorm).

StableLM with ``use_parallel_residual=True`` has parallel blocks whose attention and FFN both read the input norm.
"""

from dataclasses import replace

from transformers import PretrainedConfig

from ._adapter import Adapter, AdapterChoice
from .llama import LLAMA

QWEN3 = replace(LLAMA, family="Qwen3")
STABLELM = replace(LLAMA, family="StableLM", norm_kind="layer", norm_eps_attr="eps")
STABLELM_PARALLEL = replace(STABLELM, layout="parallel", norm2="input_layernorm")
"""StableLM with ``use_parallel_residual=True``."""


def stablelm_for(config: PretrainedConfig) -> Adapter:
    """Sequential or parallel StableLM blocks, following ``use_parallel_residual``."""
    return STABLELM_PARALLEL if getattr(config, "use_parallel_residual", False) else STABLELM


STABLELM_CHOICE = AdapterChoice(
    family="StableLM",
    choose=stablelm_for,
    variants=(("use_parallel_residual=False", STABLELM), ("use_parallel_residual=True", STABLELM_PARALLEL)),
)
