"""Module-level helpers of the extractors: path lookup, eager attention and eval mode, output projections."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from torch import Tensor, nn
from transformers import PretrainedConfig
from transformers.pytorch_utils import Conv1D
from transformers.utils import ModelOutput

from ..errors import ExtractionError, UnsupportedArchitectureError


def resolve(root: nn.Module, path: str, *, field: str | None = None, where: str | None = None) -> nn.Module:
    """Return the submodule at dotted ``path`` of ``root``.

    Args:
        root: The module the path is relative to.
        path: A dotted attribute path.
        field: The adapter field that names ``path`` (for the error message).
        where: What ``root`` is, e.g. ``"GPT2Model, block 0"`` (for the error message).

    Raises:
        ExtractionError: If any part of the path is missing or is not a module.
    """
    module = root
    walked: list[str] = []
    for name in path.split("."):
        child = getattr(module, name, None)
        if not isinstance(child, nn.Module):
            inside = f"'{'.'.join(walked)}'" if walked else "it"
            named = f"adapter field '{field}' = '{path}'" if field else f"path '{path}'"
            raise ExtractionError(
                f"{where or type(root).__name__}: {named} names no submodule ({inside} has no submodule '{name}'). "
                "The adapter does not match this model's structure: fix that field (see docs/architectures.md)."
            )
        walked.append(name)
        module = child
    return module


def bare_model(model: nn.Module) -> nn.Module:
    """The model without its head: ``model.base_model``, or, for heads whose ``base_model_prefix`` names no
    submodule (transformers 4.57's ``Gemma3ForCausalLM`` has ``model`` but the prefix ``language_model``), the
    pretrained submodule the head wraps."""
    base = getattr(model, "base_model", model)
    if base is not model:
        return base
    for name in ("model", "transformer", "language_model"):
        child = getattr(model, name, None)
        if isinstance(child, nn.Module) and hasattr(child, "config"):
            return child
    return model


def first_tensor(output: Any) -> Tensor:
    """A module's main output: the first element of a tuple, list or transformers ``ModelOutput``."""
    if isinstance(output, ModelOutput):
        return output.to_tuple()[0]
    return output[0] if isinstance(output, (tuple, list)) else output


def _configs_of(model: nn.Module) -> list[PretrainedConfig]:
    seen: dict[int, PretrainedConfig] = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if isinstance(config, PretrainedConfig):
            seen.setdefault(id(config), config)
            for key in getattr(config, "sub_configs", {}) or {}:
                sub = getattr(config, key, None)
                if isinstance(sub, PretrainedConfig):
                    seen.setdefault(id(sub), sub)
    return list(seen.values())


@contextmanager
def eager_attention(model: nn.Module) -> Iterator[None]:
    """Run ``model`` with eager attention (which returns the attention weights), restoring the setting after."""
    saved = [(config, config.__dict__.get("_attn_implementation_internal")) for config in _configs_of(model)]
    try:
        for config, _ in saved:
            config.__dict__["_attn_implementation_internal"] = "eager"
        yield
    finally:
        for config, value in saved:
            config.__dict__["_attn_implementation_internal"] = value


@contextmanager
def differentiable_attention(model: nn.Module) -> Iterator[None]:
    """Run ``model`` with attention that has forward-mode and double-backward formulas.

    Scaled dot-product attention is restricted to its composite (math) kernel, which has both (the fused kernels have
    neither); other implementations (flash, flex) are switched to eager for the call. Eager and SDPA models keep
    their setting: some (e.g. DistilBERT on transformers 4.57) pick their attention class when built and their mask
    format from the config, so switching the config alone would break them.
    """
    with ExitStack() as stack:
        if any(config.__dict__.get("_attn_implementation_internal") not in (None, "eager", "sdpa")
               for config in _configs_of(model)):  # fmt: skip
            stack.enter_context(eager_attention(model))
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel
        except ImportError:  # torch < 2.3: no kernel selection
            pass
        else:
            stack.enter_context(sdpa_kernel(SDPBackend.MATH))
        yield


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode (no dropout), restoring its training flag after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def input_output_weight(module: nn.Module) -> Tensor | None:
    """A projection's weight as ``[input, output]`` (rows are vectors), or ``None`` for another kind of module."""
    if isinstance(module, nn.Linear):
        return module.weight.t()
    if isinstance(module, Conv1D):
        return module.weight
    return None


def output_projection_per_head(module: nn.Module, n_heads: int) -> tuple[Tensor, Tensor | None]:
    """Split an output projection into per-head rows ``[head, d_head, d_model]`` and its bias."""
    weight = input_output_weight(module)
    if weight is None:
        raise UnsupportedArchitectureError(
            f"Output projection of type {type(module).__name__} is not supported; expected nn.Linear or Conv1D."
        )
    d_in, d_model = weight.shape
    return weight.reshape(n_heads, d_in // n_heads, d_model), module.bias
