"""Head interventions from outside the model: ablate heads or merge two heads, as context managers.

Both act on the input of a layer's attention output projection, where the heads' outputs sit side by side: the
heads' outputs are replaced by ``C @ heads`` for a head-mixing matrix ``C`` (``[head, head]``). Because
``Σ_h (C·ctx)_h W_O^h = Σ_g ctx_g (Σ_h C[h, g] W_O^h)``, the extractors fold ``C`` into the per-head output
projection, so every measure (and its exactness checks) reflects the intervention. The active matrices live in a
registry keyed (weakly) by output projection, never on the modules; the run layer passes them to the recorders
(:func:`active_head_mixes`).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from ..errors import InvalidInputError
from ._adapter import Adapter, EncoderDecoderAdapter
from ._modules import bare_model, resolve

_ACTIVE: weakref.WeakKeyDictionary[nn.Module, list[Tensor]] = weakref.WeakKeyDictionary()
"""Output projection -> the head-mixing matrices active on it, innermost last."""


def _combined(mixes: list[Tensor]) -> Tensor:
    combined = mixes[0]
    for mix in mixes[1:]:
        combined = mix @ combined  # applied in order: the later context acts on the earlier one's output
    return combined


def active_head_mixes(model: nn.Module) -> dict[nn.Module, Tensor]:
    """The combined head-mixing matrix of every output projection of ``model`` with an active intervention."""
    return {module: _combined(_ACTIVE[module]) for module in model.modules() if _ACTIVE.get(module)}


def _output_projection(model: PreTrainedModel, layer: int, stack: str) -> nn.Module:
    from . import get_adapter  # the table lives in the package init

    adapter = get_adapter(model)
    view: Adapter = getattr(adapter, stack if stack != "layers" else "encoder") if isinstance(
        adapter, EncoderDecoderAdapter
    ) else adapter  # fmt: skip
    blocks = resolve(bare_model(model), view.blocks, field="blocks", where=type(model).__name__)
    if not isinstance(layer, int) or not 0 <= layer < len(blocks):
        raise InvalidInputError(
            f"Layer {layer!r} out of range: the {stack} stack of {type(model).__name__} has {len(blocks)} layers "
            f"(0 to {len(blocks) - 1})."
        )
    return resolve(blocks[layer], view.output_proj, field="output_proj", where=f"{type(model).__name__}, block {layer}")


@contextmanager
def mixed_heads(model: PreTrainedModel, mixes: Mapping[int, Tensor], *, stack: str = "layers") -> Iterator[None]:
    """Replace the heads' outputs of each listed layer by ``C @ heads`` (``C``: ``[head, head]``) inside the context.

    Hooks and attributes are removed on exit, also when an exception escapes.
    """
    entered: list[tuple[nn.Module, torch.utils.hooks.RemovableHandle]] = []
    try:
        for layer, mix in mixes.items():
            module = _output_projection(model, layer, stack)
            n_heads = mix.shape[0]

            def apply(_module: nn.Module, args: tuple, mix: Tensor = mix, n_heads: int = n_heads) -> tuple:
                heads = args[0].unflatten(-1, (n_heads, -1))
                mixed = torch.einsum("hg,...ge->...he", mix.to(heads.dtype).to(heads.device), heads)
                return (mixed.flatten(-2), *args[1:])

            handle = module.register_forward_pre_hook(apply)
            _ACTIVE.setdefault(module, []).append(mix.float())
            entered.append((module, handle))
        yield
    finally:
        for module, handle in reversed(entered):
            handle.remove()
            _ACTIVE[module].pop()
            if not _ACTIVE[module]:
                del _ACTIVE[module]


def _n_heads(model: PreTrainedModel, layer: int, stack: str) -> int:
    config = model.config
    for name in ("num_attention_heads", "n_head", "num_heads", "encoder_attention_heads", "n_heads"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            if stack in ("decoder", "cross") and isinstance(getattr(config, "decoder_attention_heads", None), int):
                return config.decoder_attention_heads
            return value
    raise ValueError(f"Cannot read the number of heads of {type(model).__name__} from its config.")


def check_heads(heads: Sequence[int], n_heads: int, where: str) -> list[int]:
    """Return ``heads`` as a list after checking each is a head index in ``[0, n_heads)``.

    Raises:
        InvalidInputError: Naming the indices out of range and the valid ones.
    """
    heads = [heads] if isinstance(heads, int) else list(heads)
    invalid = [h for h in heads if not isinstance(h, int) or not 0 <= h < n_heads]
    if invalid:
        raise InvalidInputError(
            f"Head(s) {invalid} out of range for {where}, which has {n_heads} heads (0 to {n_heads - 1})."
        )
    return heads


@contextmanager
def ablate_heads(
    model: PreTrainedModel, heads: Mapping[int, Sequence[int]], *, stack: str = "layers"
) -> Iterator[None]:
    """Remove the listed heads' outputs (``{layer: [heads]}``) inside the context; restored on exit.

    Example:
        >>> with ablate_heads(model, {3: [0, 5]}):
        ...     mixing = context_mixing(model, ids, "alti")  # computed on the ablated model
    """
    mixes = {}
    for layer, ablated in heads.items():
        n_heads = _n_heads(model, layer, stack)
        keep = torch.ones(n_heads)
        keep[check_heads(ablated, n_heads, f"layer {layer}")] = 0
        mixes[layer] = torch.diag(keep)
    with mixed_heads(model, mixes, stack=stack):
        yield


@contextmanager
def merge_heads(
    model: PreTrainedModel, layer: int, head_a: int, head_b: int, alpha: float = 0.5, *, stack: str = "layers"
) -> Iterator[None]:
    """Make heads ``a`` and ``b`` of ``layer`` one head inside the context: both output ``α·a + (1−α)·b``.

    Each keeps its own rows of the output projection; ``alpha=1`` copies head ``a`` into ``b``. Restored on exit.
    """
    n_heads = _n_heads(model, layer, stack)
    check_heads([head_a, head_b], n_heads, f"layer {layer}")
    if head_a == head_b:
        raise InvalidInputError(
            f"merge_heads got the same head twice ({head_a}); name two different heads of layer {layer} to merge."
        )
    mix = torch.eye(n_heads)
    merged = torch.zeros(n_heads)
    merged[head_a] += alpha
    merged[head_b] += 1 - alpha
    mix[head_a], mix[head_b] = merged, merged
    with mixed_heads(model, {layer: mix}, stack=stack):
        yield
