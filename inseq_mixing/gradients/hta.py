"""Hidden token attribution (Brunner et al., ICLR 2020, "On Identifiability in Transformers").

``c^l_{i←j} = ‖∂e^l_i / ∂x_j‖_F``: how strongly block ``l``'s output at token ``i`` responds to the input embedding
of token ``j`` (the hidden state entering the first block). Computed with Jacobian-vector products
(:mod:`._tangents`): one tangent per input coordinate gives every layer and every receiving token at once, so the
exact value costs ``n·d`` batched forward passes; the randomized estimate ``‖J‖_F² = E_u ‖J u‖²`` with Rademacher
tangents ``u`` on ``x_j`` costs ``n·samples`` and reports its standard error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from ..errors import InvalidInputError
from ..extract import blocks_of, get_adapter
from ..inputs import ModelInputs, check_model, prepare_inputs
from ..measures._chunks import DEFAULT_MEMORY_BUDGET
from ._tangents import block_tangents, replicate

PROGRESS_MIN_PASSES = 8
"""Show a progress bar when one sequence needs at least this many batched passes."""


@dataclass(frozen=True)
class HiddenTokenAttribution:
    """HTA of every layer, exact or estimated.

    Attributes:
        squared_norms: ``‖∂e^l_i/∂x_j‖_F²`` ``[batch, layer, query, key]`` (the estimate is unbiased for these).
        stderr: The standard error of each estimated squared norm (``None`` when exact).
        samples: Rademacher probes per token (``None`` when exact).
    """

    squared_norms: Float[Tensor, "batch layer query key"]
    stderr: Float[Tensor, "batch layer query key"] | None
    samples: int | None

    @property
    def norms(self) -> Float[Tensor, "batch layer query key"]:
        """``‖∂e^l_i/∂x_j‖_F``, the raw HTA scores (rows not normalized)."""
        return self.squared_norms.clamp_min(0).sqrt()


def hidden_token_attribution(
    model: Any,
    inputs: ModelInputs | Any,
    attention_mask: Any = None,
    *,
    samples: int | None = None,
    seed: int = 0,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> HiddenTokenAttribution:
    """HTA with its raw squared norms and, for the estimate, standard errors (use
    :func:`inseq_mixing.context_mixing` with ``"hta"`` for the row-normalized maps).

    Args:
        model: A supported encoder or decoder-only model.
        inputs: Token ids ``[batch, seq]`` (or ``[seq]``), or inputs already validated by
            ``inseq_mixing.inputs.prepare_inputs``.
        attention_mask: The padding mask of ``inputs`` when they are token ids.
        samples: ``None`` for the exact value; otherwise Rademacher probes per input token.
        seed: Seed of the probes.
        memory_budget: Bytes the batched passes may use (more, smaller passes when short).
    """
    if samples is not None and (not isinstance(samples, int) or samples < 2):
        raise InvalidInputError(f"samples must be an integer >= 2 (it also gives the error bars); got {samples!r}.")
    if not isinstance(inputs, ModelInputs):
        model = check_model(model)
        inputs = prepare_inputs(model, get_adapter(model), inputs, attention_mask)
    blocks = blocks_of(model)
    mask = inputs.masks["layers"][0]
    batch, seq = mask.shape
    d_model = model.config.get_text_config().hidden_size
    dtype = torch.float64 if next(model.parameters()).dtype == torch.float64 else torch.float32
    squared = torch.zeros(batch, len(blocks), seq, seq, dtype=dtype, device=mask.device)
    second = torch.zeros_like(squared) if samples else None
    generator = torch.Generator(device=mask.device).manual_seed(seed)
    per_copy = _bytes_per_copy(model, seq, d_model)
    for b in range(batch):
        real = mask[b].nonzero()[:, 0]
        probes = [(int(j), k) for j in real for k in range(samples or d_model)]
        copies = max(1, min(len(probes), memory_budget // per_copy))
        chunks = range(0, len(probes), copies)
        for start in tqdm(chunks, desc=f"HTA, sequence {b + 1}/{batch}", disable=len(chunks) < PROGRESS_MIN_PASSES):
            chunk = probes[start : start + copies]
            sources = torch.tensor([j for j, _ in chunk], device=mask.device)
            tangents = torch.zeros(len(chunk), seq, d_model, dtype=dtype, device=mask.device)
            rows = torch.arange(len(chunk), device=mask.device)
            if samples:
                signs = torch.randint(0, 2, (len(chunk), d_model), generator=generator, device=mask.device)
                tangents[rows, sources] = (2 * signs - 1).to(dtype)
            else:
                tangents[rows, sources, torch.tensor([k for _, k in chunk], device=mask.device)] = 1

            def reduce(layer: int, out: Tensor, b: int = b, sources: Tensor = sources) -> None:
                values = out.to(dtype).pow(2).sum(-1).t()  # [query, copy]
                squared[b, layer].index_add_(1, sources, values)
                if second is not None:
                    second[b, layer].index_add_(1, sources, values.pow(2))

            block_tangents(model, blocks, replicate(inputs.forward, b, len(chunk)), tangents, reduce)
    if not samples:
        return HiddenTokenAttribution(squared_norms=squared, stderr=None, samples=None)
    mean = squared / samples
    variance = (second / samples - mean.pow(2)).clamp_min(0) * samples / (samples - 1)
    return HiddenTokenAttribution(squared_norms=mean, stderr=(variance / samples).sqrt(), samples=samples)


def hta(
    model: Any,
    inputs: ModelInputs,
    *,
    samples: int | None = None,
    seed: int = 0,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> Float[Tensor, "batch layer query key"]:
    """``‖∂e^l_i/∂x_j‖_F`` for every layer (the measure behind ``context_mixing(..., "hta")``).

    Options:
        samples: ``None`` (default) for the exact Jacobian norms (``seq·d_model`` batched JVPs); an integer for the
            randomized estimate with that many Rademacher probes per token (``seq·samples`` JVPs), for long inputs.
            :func:`hidden_token_attribution` also returns the estimate's standard errors.
        seed: Seed of the probes.
    """
    return hidden_token_attribution(model, inputs, samples=samples, seed=seed, memory_budget=memory_budget).norms


def _bytes_per_copy(model: Any, seq: int, d_model: int) -> int:
    """A generous bound on what one copy's forward with tangents holds at once (primal and tangent of a layer's
    activations, attention scores included)."""
    config = model.config.get_text_config()
    heads = getattr(config, "num_attention_heads", 1) or 1
    d_ff = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * d_model
    element = 8 if next(model.parameters()).dtype == torch.float64 else 4
    return 2 * element * seq * (12 * d_model + 4 * heads * seq + 3 * d_ff)
