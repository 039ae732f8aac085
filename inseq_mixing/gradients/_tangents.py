"""Jacobian-vector products of every block's output with respect to the first block's input, batched over tangents.

The model runs on ``B`` copies of one sequence; copy ``r`` carries its own tangent ``u_r`` on the hidden state that
enters the first block, and each block's output tangent ``J_l u_r`` is reduced to what the caller needs as soon as
the block has run (nothing per layer is kept). Forward-mode AD gives all layers in one pass; for models with an
operation that has no forward-mode formula (e.g. BLOOM's custom GELU), the same products come from reverse mode by
the double-backward identity ``J u = ∂/∂w ⟨Jᵀ w, u⟩``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
import torch.autograd.forward_ad as fwAD
from torch import Tensor, nn

from ..errors import ExtractionError
from ..extract._modules import bare_model, differentiable_attention, eval_mode, first_tensor

Reduce = Callable[[int, Tensor], None]
"""Called with ``(layer, output tangents [B, seq, d_model])`` once per block."""


def replicate(forward: dict[str, Any], index: int, copies: int) -> dict[str, Any]:
    """The forward arguments of sequence ``index`` repeated ``copies`` times along the batch."""
    return {
        name: value[index : index + 1].repeat(copies, *[1] * (value.dim() - 1)) if isinstance(value, Tensor) else value
        for name, value in forward.items()
    }


@contextmanager
def _first_input_replaced(block: nn.Module, replace: Callable[[Tensor], Tensor], where: str) -> Iterator[None]:
    def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if args:
            return (replace(args[0]), *args[1:]), kwargs
        if "hidden_states" not in kwargs:
            raise ExtractionError(f"{where}: the first block was called without its hidden states.")
        return args, {**kwargs, "hidden_states": replace(kwargs["hidden_states"])}

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _outputs_seen(blocks: nn.ModuleList, see: Callable[[int, Tensor], None]) -> ExitStack:
    stack = ExitStack()
    for idx, block in enumerate(blocks):
        handle = block.register_forward_hook(lambda m, a, out, idx=idx: see(idx, first_tensor(out)))
        stack.callback(handle.remove)
    return stack


def block_tangents(
    model: nn.Module, blocks: nn.ModuleList, forward: dict[str, Any], tangents: Tensor, reduce: Reduce
) -> None:
    """Feed ``J_l u`` of every block ``l`` to ``reduce``, for the tangents ``u`` ``[B, seq, d_model]`` on the first
    block's input of the ``B`` copies in ``forward``."""
    where = type(model).__name__

    def see(idx: int, out: Tensor) -> None:
        tangent = fwAD.unpack_dual(out).tangent
        if tangent is None:
            raise ExtractionError(f"{where}: block {idx}'s output does not depend on the first block's input.")
        reduce(idx, tangent)

    def dual(h: Tensor) -> Tensor:
        return fwAD.make_dual(h, tangents.to(h.dtype))

    try:
        with ExitStack() as stack:
            for context in (
                fwAD.dual_level(),
                torch.no_grad(),
                eval_mode(model),
                differentiable_attention(model),
            ):
                stack.enter_context(context)
            stack.enter_context(_first_input_replaced(blocks[0], dual, where))
            stack.enter_context(_outputs_seen(blocks, see))
            bare_model(model)(**forward)
        return
    except NotImplementedError:  # an operation without a forward-mode formula: fall back to reverse mode
        pass
    _block_tangents_reverse(model, blocks, forward, tangents, reduce, where)


def _block_tangents_reverse(
    model: nn.Module, blocks: nn.ModuleList, forward: dict[str, Any], tangents: Tensor, reduce: Reduce, where: str
) -> None:
    inputs: list[Tensor] = []
    outputs: list[Tensor] = []

    def leaf(h: Tensor) -> Tensor:
        inputs.append(h.detach().requires_grad_(True))
        return inputs[-1]

    with torch.enable_grad(), eval_mode(model), differentiable_attention(model):
        with _first_input_replaced(blocks[0], leaf, where), _outputs_seen(blocks, lambda i, out: outputs.append(out)):
            bare_model(model)(**forward)
        dummies = [torch.zeros_like(out, requires_grad=True) for out in outputs]
        pulled = torch.autograd.grad(
            sum((o * w).sum() for o, w in zip(outputs, dummies, strict=True)), inputs[0], create_graph=True
        )
        pushed = torch.autograd.grad((pulled[0] * tangents.to(pulled[0].dtype)).sum(), dummies, allow_unused=True)
    for idx, tangent in enumerate(pushed):
        reduce(idx, torch.zeros_like(outputs[idx]) if tangent is None else tangent.detach())
