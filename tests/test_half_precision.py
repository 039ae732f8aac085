"""Half-precision models pass the exactness checks (relative tolerance) and stay close to float32 results."""

from __future__ import annotations

import pytest
import torch

from inseq_mixing import METHODS, context_mixing

from ._helpers import sample_inputs
from ._tiny_models import build_tiny_model

# Largest deviation from the float32 model's normalized matrices seen on the tiny models is ~6e-2 (bf16 ALTI);
# these bounds leave room for rounding, not for a wrong decomposition (which is off by O(1)).
BOUNDS = {torch.float16: 1e-2, torch.bfloat16: 1e-1}


@pytest.mark.parametrize("dtype", sorted(BOUNDS, key=str))
@pytest.mark.parametrize("model_type", ["bert", "gpt2", "llama", "gemma2"])
def test_half_precision_matches_float32(model_type: str, dtype: torch.dtype) -> None:
    full = build_tiny_model(model_type)
    half = build_tiny_model(model_type).to(dtype)
    ids = sample_inputs(full, batch=1, seq=10)
    for method in METHODS:
        result = context_mixing(half, ids, method)
        assert result.dtype == torch.float32
        torch.testing.assert_close(result.sum(-1), torch.ones_like(result.sum(-1)))
        assert (result - context_mixing(full, ids, method)).abs().max() < BOUNDS[dtype], method
