"""Time of the prediction explanations (DecompX, ALTI-Logit, Logit) against one plain forward, beside value zeroing.

Run: ``python benchmarks/bench_prediction.py [--lengths 128 512] [--device cpu|cuda]``. A GPT-2-small-shaped causal LM
with random weights (fixed seed; nothing is downloaded), one sequence; every method is timed in the same process as
an eager forward of the whole model, interleaved (minimum of ``--repeats`` runs each), and reported as a ratio to it.
DecompX applies the FFN to every (position, source) part: about ``n/2`` FFN passes per layer for a causal model, the
same order as value zeroing's ``n/2`` reruns of the rest of the block.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from inseq_mixing import attribute_prediction, context_mixing
from inseq_mixing.extract._modules import eager_attention

SHAPE = {"n_layer": 12, "n_head": 12, "n_embd": 768, "vocab_size": 50257, "n_positions": 2048}
METHODS = ("logit", "alti_logit", "decompx")


def timed(fn: Callable[[], object], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--no-warmup", action="store_true", help="Skip each method's warm-up run (long inputs).")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(**SHAPE)).to(args.device).eval()
    print(f"GPT-2-small-shaped random causal LM, {args.device}; ratios to one eager forward of the whole model")
    print("| n | method | s | ×fwd |")
    print("|---|---|---|---|")
    for n in args.lengths:
        measure_length(model, n, args.device, args.repeats, warmup=not args.no_warmup)


def measure_length(model: GPT2LMHeadModel, n: int, device: str, repeats: int, *, warmup: bool = True) -> None:
    """Print one row per method at length ``n``."""
    ids = torch.randint(0, SHAPE["vocab_size"], (1, n), device=device)

    def forward() -> None:
        with torch.no_grad(), eager_attention(model):
            model(input_ids=ids)

    tasks: dict[str, Callable[[], object]] = {
        name: (lambda name=name: attribute_prediction(model, ids, name)) for name in METHODS
    }
    tasks["value_zeroing (context_mixing)"] = lambda: context_mixing(model, ids, "value_zeroing")
    forward()  # warm up
    for name, task in tasks.items():
        if warmup:
            task()
        pairs = [(timed(forward, device), timed(task, device)) for _ in range(repeats)]
        fwd, seconds = min(p[0] for p in pairs), min(p[1] for p in pairs)
        print(f"| {n} | {name} | {seconds:.3f} | {seconds / fwd:.1f} |", flush=True)


if __name__ == "__main__":
    main()
