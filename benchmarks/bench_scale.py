"""Time and peak memory of every measure as ratios to one plain eager forward, beside a materializing baseline.

Run: ``python benchmarks/bench_scale.py [--model gpt2|llama] [--lengths 128 512 2048] [--device cpu|cuda]``
(``--methods "all measures, one pass" "all measures, separate calls"`` times every measure from one pass against
one call per measure).
Each measurement runs in a fresh process (random weights, fixed seed; no download) that also times a plain eager
forward, interleaved with the measurement: the ratios compare runs made under the same machine load. Peak memory
is the process's resident-set high-water mark above the loaded model (CPU, in a separate run with exact allocator
accounting) or ``torch.cuda.max_memory_allocated`` (GPU), as a ratio to the eager forward's. The
materializing baseline builds every layer's ``[query, key, d_model]`` vectors, as published implementations do; it
is skipped where that tensor alone would exceed ``--materializing-limit-gb``.
"""

from __future__ import annotations

import argparse
import ctypes
import multiprocessing as mp
import time
from collections.abc import Callable

BASELINES = ("forward (eager)", "forward (sdpa)")
MEASURES = ("attention_rollout", "attention_norm", "attention_norm_res", "attention_norm_res_ln", "globenc", "alti")
TOGETHER = ("all measures, one pass", "all measures, separate calls")
"""Every measure above from one ``context_mixing(model, ids, [...])`` call, against one call per measure."""
SHAPES = {
    "gpt2": {"n_layer": 12, "n_head": 12, "n_embd": 768, "vocab_size": 50257, "n_positions": 8192},
    "llama": {
        "num_hidden_layers": 8, "num_attention_heads": 16, "num_key_value_heads": 4, "hidden_size": 1024,
        "intermediate_size": 2816, "vocab_size": 32000, "max_position_embeddings": 8192,
    },
}  # fmt: skip


def _exact_cpu_accounting() -> None:
    """Serve every allocation above 64 KiB from its own mapping, returned to the OS when freed, so that the
    resident set measures live tensors (glibc otherwise raises its threshold and keeps freed blocks mapped)."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallopt(-3, 64 << 10)  # M_MMAP_THRESHOLD
    libc.mallopt(-1, 64 << 10)  # M_TRIM_THRESHOLD


def _peak_reset(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    else:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")


def _peak_bytes(device: str) -> int:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated()
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def _current_bytes(device: str) -> int:
    import torch

    if device == "cuda":
        return torch.cuda.memory_allocated()
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * 4096


def _worker(model_name: str, n: int, task: str, device: str, dtype: str, repeats: int, queue: mp.Queue) -> None:
    import torch
    from transformers import AutoModel, GPT2Config, LlamaConfig

    from inseq_mixing import context_mixing
    from inseq_mixing.extract import get_adapter, recording
    from inseq_mixing.extract._modules import eager_attention

    torch.manual_seed(0)
    config = (GPT2Config if model_name == "gpt2" else LlamaConfig)(**SHAPES[model_name])
    impl = "sdpa" if task == "forward (sdpa)" else "eager"
    model = AutoModel.from_config(config, attn_implementation=impl).to(device, getattr(torch, dtype)).eval()
    ids = torch.randint(0, config.vocab_size, (1, n), device=device)
    if task in BASELINES:
        run: Callable[[], object] = lambda: model(input_ids=ids, use_cache=False)  # noqa: E731
    elif task.startswith("materializing "):
        from _materializing import materializing_measure

        name = task.removeprefix("materializing ")

        def run() -> None:
            with recording(model, get_adapter(model), lambda record: materializing_measure(record, name)):
                model(input_ids=ids, use_cache=False)
    elif task == TOGETHER[0]:
        run = lambda: context_mixing(model, ids, list(MEASURES))  # noqa: E731
    elif task == TOGETHER[1]:
        run = lambda: [context_mixing(model, ids, name) for name in MEASURES]  # noqa: E731
    else:
        run = lambda: context_mixing(model, ids, task)  # noqa: E731

    def forward() -> None:  # eager, also in the sdpa model's process
        with eager_attention(model):
            model(input_ids=ids, use_cache=False)

    def timed(fn: Callable[[], object]) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - start

    try:
        with torch.no_grad():
            run()  # warm up
            # The plain forward is timed in the same process, interleaved, so that ratios do not depend on how
            # busy the machine was when another process ran.
            forward_times, times = zip(*((timed(forward), timed(run)) for _ in range(repeats)), strict=True)
            if device == "cpu":  # a separate run for memory: exact accounting slows allocation down
                _exact_cpu_accounting()
            _peak_reset(device)
            base = _current_bytes(device)
            run()
            queue.put((min(times), min(forward_times), max(0, _peak_bytes(device) - base)))
    except (torch.OutOfMemoryError, RuntimeError) as error:
        queue.put(("OOM" if "memory" in str(error).lower() else f"error: {error}", None, 0))


def measure(
    model_name: str, n: int, task: str, device: str, dtype: str, repeats: int
) -> tuple[object, float | None, int]:
    """Run one task in a fresh process: ``(seconds or a failure string, the same process's plain forward seconds,
    peak bytes above the loaded model)``."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    process = ctx.Process(target=_worker, args=(model_name, n, task, device, dtype, repeats, queue))
    process.start()
    process.join()
    return queue.get() if not queue.empty() else ("crashed (likely out of memory)", None, 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", choices=sorted(SHAPES), default="gpt2")
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512, 2048])
    parser.add_argument("--methods", nargs="+", default=[*MEASURES, *TOGETHER])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--materializing-limit-gb", type=float, default=4.0)
    args = parser.parse_args()
    d_model = SHAPES[args.model].get("n_embd") or SHAPES[args.model]["hidden_size"]
    print(f"{args.model}-shaped random model, {args.device}, {args.dtype}; ratios to one eager forward")
    print("| n | method | s | ×fwd | peak MB | ×fwd peak | materializing s | ×fwd | peak MB | ×fwd peak |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for n in args.lengths:
        fwd_peak = 1
        for task in (*BASELINES, *args.methods):
            seconds, fwd_s, peak = measure(args.model, n, task, args.device, args.dtype, args.repeats)
            if task == "forward (eager)":
                fwd_peak = max(peak, 1)
            row = f"| {n} | {task} | " + _cells(seconds, fwd_s, peak, fwd_peak)
            name = task.removeprefix("attention_rollout")
            if task in MEASURES and name:
                size_gb = 4 * n * n * d_model / 1e9
                if size_gb > args.materializing_limit_gb:
                    row += f" skipped ([n, n, d] = {size_gb:.0f} GB) | | | |"
                else:
                    m_s, m_fwd_s, m_peak = measure(args.model, n, f"materializing {task}", args.device, args.dtype, 1)
                    row += " " + _cells(m_s, m_fwd_s, m_peak, fwd_peak)
            else:
                row += " | | | |"
            print(row, flush=True)


def _cells(seconds: object, fwd_s: float | None, peak: int, fwd_peak: int) -> str:
    if not isinstance(seconds, float) or fwd_s is None:
        return f"{seconds} | | | |"
    return f"{seconds:.3f} | {seconds / fwd_s:.2f} | {peak / 2**20:.0f} | {peak / fwd_peak:.2f} |"


if __name__ == "__main__":
    main()
