"""Time of every measure as a ratio to one plain forward of the same model and sequence.

Run: ``python benchmarks/bench_measures.py [--lengths 128 512] [--model gpt2|llama] [--device cpu|cuda]``
(value zeroing has its own script, ``bench_value_zeroing.py``).
Random weights, fixed seed; no download. Prints a table: seconds for the plain (sdpa) forward, then per measure
its seconds and its ratio to the forward.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial

import torch
from transformers import AutoModel, GPT2Config, LlamaConfig, PretrainedConfig

from inseq_mixing import METHODS, context_mixing

SHAPES: dict[str, Callable[[], PretrainedConfig]] = {
    "gpt2": lambda: GPT2Config(n_layer=12, n_head=12, n_embd=768, vocab_size=50257, n_positions=8192),
    "llama": lambda: LlamaConfig(
        num_hidden_layers=8,
        num_attention_heads=16,
        num_key_value_heads=4,
        hidden_size=1024,
        intermediate_size=2816,
        vocab_size=32000,
        max_position_embeddings=8192,
    ),
}


def best_of(fn: Callable[[], object], repeats: int, device: str) -> float:
    """The fastest of ``repeats`` runs, in seconds."""
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=sorted(SHAPES), default="gpt2")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--methods", nargs="+", default=[m for m in METHODS if m != "value_zeroing"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = AutoModel.from_config(SHAPES[args.model](), attn_implementation="sdpa").eval().to(args.device)
    print(
        f"model: {args.model}-shaped {type(model).__name__}, {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M "
        f"params, device {args.device}, torch threads {torch.get_num_threads()}"
    )
    header = "| method | " + " | ".join(f"n={n} s | n={n} ×fwd" for n in args.lengths) + " |"
    print(header)
    print("|" + "---|" * (1 + 2 * len(args.lengths)))
    forward_times = {}
    rows: dict[str, list[str]] = {"forward (sdpa)": []}
    for n in args.lengths:
        ids = torch.randint(0, model.config.vocab_size, (1, n), device=args.device)
        with torch.no_grad():
            forward_times[n] = best_of(partial(model, input_ids=ids, use_cache=False), args.repeats, args.device)
        rows["forward (sdpa)"] += [f"{forward_times[n]:.3f}", "1.00"]
        for method in args.methods:
            seconds = best_of(partial(context_mixing, model, ids, method), args.repeats, args.device)
            rows.setdefault(method, []).extend([f"{seconds:.3f}", f"{seconds / forward_times[n]:.2f}"])
    for name, cells in rows.items():
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
