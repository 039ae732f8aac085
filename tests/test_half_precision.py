"""Half-precision models pass the exactness checks (relative tolerance) and stay close to float32 results."""

from __future__ import annotations

import pytest
import torch
import transformers
from transformers import AutoModel

from inseq_mixing import METHODS, context_mixing
from inseq_mixing.measures import MEASURES

from ._helpers import SUPPORTED_SEQ2SEQ_TYPES, SUPPORTED_TINY_TYPES, sample_inputs
from ._tiny_models import build_tiny_model, save_tiny

DTYPE_KWARG = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"

# Largest deviation from the float32 model's normalized matrices seen on the tiny models is ~6e-2 (bf16 ALTI);
# these bounds leave room for rounding, not for a wrong decomposition (which is off by O(1)).
BOUNDS = {torch.float16: 1e-2, torch.bfloat16: 1e-1}
VALUE_ZEROING_BOUNDS = {torch.float16: 3e-2, torch.bfloat16: 1e-1}
"""Value zeroing reruns each block's rest in half precision: ~1e-2 off in float16 (docs/measures/value_zeroing.md)."""


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


def model_kind_ok(method: str, model) -> bool:
    """Whether ``method`` supports the model's kind (DecompX has no encoder-decoder path)."""
    kind = "encoder-decoder" if model.config.is_encoder_decoder else "decoder"
    return kind in MEASURES[method].kinds


def _keeps_float32_modules(model_type: str) -> bool:
    model_class = type(build_tiny_model(model_type))
    return bool(getattr(model_class, "_keep_in_fp32_modules", None))


MIXED_PRECISION_TYPES = [t for t in (*SUPPORTED_TINY_TYPES, *SUPPORTED_SEQ2SEQ_TYPES) if _keeps_float32_modules(t)]
"""Families whose modeling code keeps some modules in float32 when loaded in half precision (T5's FFN output)."""


@pytest.mark.parametrize("dtype", sorted(BOUNDS, key=str))
@pytest.mark.parametrize("model_type", MIXED_PRECISION_TYPES)
def test_mixed_precision_as_from_pretrained_loads_it(model_type: str, dtype: torch.dtype, tmp_path) -> None:
    """``from_pretrained(dir, dtype=half)`` keeps ``_keep_in_fp32_modules`` in float32: the checks follow the lowest
    precision used in the block, and the results stay close to the float32 model's."""
    path = save_tiny(model_type, tmp_path / model_type, head="base")
    full = AutoModel.from_pretrained(path)
    half = AutoModel.from_pretrained(path, **{DTYPE_KWARG: dtype})
    kept = {p.dtype for name, p in half.named_parameters() if any(m in name for m in half._keep_in_fp32_modules)}
    assert {p.dtype for p in half.parameters()} == ({dtype} | kept)
    if dtype == torch.float16:  # transformers keeps them in float32 for float16 only
        assert kept == {torch.float32}
    ids = sample_inputs(full, batch=1, seq=6)
    kwargs = (
        {"decoder_input_ids": sample_inputs(full, batch=1, seq=4, seed=1)} if full.config.is_encoder_decoder else {}
    )
    for method in (m for m in METHODS if model_kind_ok(m, full)):
        result, reference = context_mixing(half, ids, method, **kwargs), context_mixing(full, ids, method, **kwargs)
        for stack in ("encoder", "decoder", "cross"):
            got, expected = getattr(result, stack), getattr(reference, stack)
            assert got.dtype == torch.float32
            bound = (VALUE_ZEROING_BOUNDS if method == "value_zeroing" else BOUNDS)[dtype]
            assert (got - expected).abs().max() < bound, (method, stack)
