"""One-command GPU check: every measure on a Llama-7B-shaped model in bf16, against the sdpa forward.

Run: ``python benchmarks/gpu_check.py --out OUTDIR [--profile] [--lengths 2048 8192] [--device cuda]
[--dtype bfloat16]`` (designed to finish in under 10 minutes on one H100/H200). ``--tiny --device cpu`` runs the
same code path on a 2-layer toy shape (lengths 16/32, value zeroing at 8, slice check at 16) in seconds.

Everything runs in one process, with random weights (fixed seed) and random token ids; nothing is downloaded.

1. Agreement: a 2-layer slice of the shape is built in float32 and copied to ``--dtype``; every measure runs on
   both at n = 512 and the max abs difference of the row-normalized per-layer matrices is compared to a bound
   (0.05 for bf16).
2. The full model (bare ``LlamaModel``, sdpa attention) is built directly on the device in ``--dtype``. At every
   length: the sdpa forward, then attention_rollout, attention_norm, attention_norm_res_ln and globenc; alti at the
   smallest length only; value_zeroing at ``--value-zeroing-length`` only. Each: one warm-up, then the minimum of 2
   synchronized runs. Peak memory is ``torch.cuda.max_memory_allocated`` during a run, reported absolute and above
   the memory allocated before the call (model weights and input ids); ratios are to the forward at the same n,
   absolute over absolute (the targets) and above-weights over above-weights. Off CUDA peaks are not measured
   (None). An out-of-memory run is
   recorded as "OOM", any other failure as its error; the script goes on.
3. Targets: peak ≤ 1.5× the forward's at the largest length (every measure but value_zeroing); time ≤ 3×
   (attention_norm, attention_norm_res_ln, globenc) and ≤ 10× (alti) the forward's at the smallest length. With
   ``--profile``, a measure missing a target runs again under ``torch.profiler`` (a warm-up, then one recorded run)
   and its top 15 kernels by self CUDA time (operators by self CPU time off CUDA) are stored.

Writes ``OUTDIR/gpu_check.json`` and ``OUTDIR/gpu_check.md``, both rewritten after every measurement, so that a run
cut short still leaves its partial results. Progress lines go to stdout.
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import LlamaConfig, LlamaModel

from inseq_mixing import context_mixing
from inseq_mixing.measures import DEFAULT_MEMORY_BUDGET

SHAPES: dict[str, dict[str, int]] = {
    "llama-7b": {
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "hidden_size": 4096,
        "intermediate_size": 11008, "vocab_size": 32000, "max_position_embeddings": 8192,
    },
    "tiny": {
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4, "hidden_size": 64,
        "intermediate_size": 128, "vocab_size": 100, "max_position_embeddings": 64,
    },
}  # fmt: skip
DEFAULTS: dict[str, dict[str, Any]] = {
    "llama-7b": {"lengths": [2048, 8192], "value_zeroing_length": 512, "slice_length": 512},
    "tiny": {"lengths": [16, 32], "value_zeroing_length": 8, "slice_length": 16},
}
FORWARD = "forward (sdpa)"
LENGTH_MEASURES = ("attention_rollout", "attention_norm", "attention_norm_res_ln", "globenc")  # at every length
SHORT_MEASURE = "alti"  # at the smallest length only
VALUE_ZEROING = "value_zeroing"  # at --value-zeroing-length only
MEASURES = (*LENGTH_MEASURES, SHORT_MEASURE, VALUE_ZEROING)
TIME_TARGETS = {"attention_norm": 3.0, "attention_norm_res_ln": 3.0, "globenc": 3.0, "alti": 10.0}
PEAK_TARGET = 1.5
AGREEMENT_BOUNDS = {"bfloat16": 0.05, "float16": 0.01, "float32": 1e-4}
SLICE_LAYERS = 2
REPEATS = 2
TOP_KERNELS = 15
MIB = 2**20


def _is_cuda(device: str) -> bool:
    return torch.device(device).type == "cuda"


def _sync(device: str) -> None:
    if _is_cuda(device):
        torch.cuda.synchronize(device)


def _reset_peak(device: str) -> int | None:
    """Reset the peak counter and return the bytes allocated now (the run's baseline); None off CUDA."""
    if not _is_cuda(device):
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


def _peak(device: str) -> int | None:
    if not _is_cuda(device):
        return None
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device)


def _free(device: str) -> None:
    gc.collect()
    if _is_cuda(device):
        torch.cuda.empty_cache()


def _ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    saved = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(saved)


def build_model(shape: dict[str, int], device: str, dtype: torch.dtype, layers: int | None = None) -> LlamaModel:
    """A bare ``LlamaModel``, random weights (seed 0), created directly on ``device`` in ``dtype``; sdpa attention."""
    config = LlamaConfig(**{**shape, "num_hidden_layers": layers or shape["num_hidden_layers"]})
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device), _default_dtype(dtype):
        model = LlamaModel(config)
    return model.eval()


def random_ids(n: int, vocab_size: int, device: str) -> torch.Tensor:
    generator = torch.Generator().manual_seed(n)
    return torch.randint(0, vocab_size, (1, n), generator=generator).to(device)


def timed(fn: Callable[[], object], device: str) -> dict[str, float | int | None]:
    """Warm up once, then run ``REPEATS`` times: minimum seconds, largest peak above the baseline and absolute."""
    with torch.no_grad():
        fn()
        times: list[float] = []
        above: list[int] = []
        absolute: list[int] = []
        for _ in range(REPEATS):
            base = _reset_peak(device)
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            times.append(time.perf_counter() - start)
            peak = _peak(device)
            if peak is not None and base is not None:
                above.append(peak - base)
                absolute.append(peak)
    peaks = {"peak_above_bytes": max(above, default=None), "peak_bytes": max(absolute, default=None)}
    return {"seconds": min(times), **peaks}


def guarded(fn: Callable[[], dict[str, Any]], device: str) -> dict[str, Any]:
    """``fn()``'s result plus ``error`` (None, "OOM" or the failure), freeing the cache after a failure."""
    error = None
    try:
        result = {**fn(), "error": None}
    except torch.cuda.OutOfMemoryError:
        error = "OOM"
    except Exception as exc:  # a failed measure is recorded, not fatal
        error = f"{type(exc).__name__}: {exc}"[:300]
    if error is not None:  # outside the except block, so that the traceback's tensors are released first
        _free(device)
        return {"error": error}
    return result


def top_kernels(fn: Callable[[], object], device: str, count: int = TOP_KERNELS) -> list[dict[str, Any]]:
    """Run ``fn`` twice under the profiler, recording the second run (the first absorbs the profiler's start-up):
    the ``count`` kernels with the most self CUDA time (operators by self CPU time off CUDA)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile, schedule

    cuda = _is_cuda(device)
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    captured: list[Any] = []
    plan = schedule(wait=0, warmup=1, active=1, repeat=1)
    ready = lambda prof: captured.extend(prof.key_averages())  # noqa: E731
    with torch.no_grad(), profile(activities=activities, schedule=plan, on_trace_ready=ready) as prof:
        for _ in range(2):
            fn()
            _sync(device)
            prof.step()

    def self_us(event: Any) -> float:
        if not cuda:
            return float(event.self_cpu_time_total)
        if hasattr(event, "self_device_time_total"):
            return float(event.self_device_time_total)
        return float(event.self_cuda_time_total)

    if cuda:  # kernels only, where the profiler tells them apart from the operators that launched them
        captured = [event for event in captured if event.device_type == DeviceType.CUDA] or captured
    events = [event for event in captured if self_us(event) > 0 and not event.key.startswith("ProfilerStep")]
    events = sorted(events, key=self_us, reverse=True)[:count]
    return [{"name": event.key, "self_us": self_us(event), "calls": int(event.count)} for event in events]


def targets_of(method: str, n: int, lengths: Sequence[int]) -> tuple[float | None, float | None]:
    """``(time target, peak target)`` of ``method`` at length ``n`` (None where none applies)."""
    time_target = TIME_TARGETS.get(method) if n == min(lengths) else None
    peak_target = PEAK_TARGET if n == max(lengths) and method in MEASURES and method != VALUE_ZEROING else None
    return time_target, peak_target


def status_of(row: dict[str, Any]) -> tuple[str, bool]:
    """``(status text, whether a target was missed by a measured value)``."""
    if row.get("error"):
        return ("OOM" if row["error"] == "OOM" else "error"), False
    if row["method"] == FORWARD:
        return "baseline", False
    checks = [("time", row["time_ratio"], row["time_target"]), ("peak", row["peak_ratio"], row["peak_target"])]
    parts, missed = [], False
    for what, value, bound in checks:
        if bound is None:
            continue
        if value is None:
            parts.append(f"{what} n/a")
        elif value <= bound:
            parts.append(f"{what} ok (≤ {bound:g}×)")
        else:
            parts.append(f"{what} MISSED ({value:.2f}× > {bound:g}×)")
            missed = True
    return ("; ".join(parts) or "no target"), missed


def agreement(shape: dict[str, int], n: int, device: str, dtype: torch.dtype, report: Report) -> None:
    """Every measure on a float32 slice of the shape and on its copy in ``dtype``: max abs difference of results."""
    full = build_model(shape, device, torch.float32, layers=SLICE_LAYERS)
    low = copy.deepcopy(full).to(dtype)
    ids = random_ids(n, shape["vocab_size"], device)
    bound = AGREEMENT_BOUNDS[str(dtype).removeprefix("torch.")]
    for method in MEASURES:

        def difference(method: str = method) -> dict[str, Any]:
            with torch.no_grad():
                reference = context_mixing(full, ids, method)
                diff = (context_mixing(low, ids, method) - reference).abs().max().item()
            return {"max_abs_diff": diff}

        row = {"method": method, "n": n, "layers": SLICE_LAYERS, "bound": bound, **guarded(difference, device)}
        row["pass"] = row.get("error") is None and math.isfinite(row["max_abs_diff"]) and row["max_abs_diff"] <= bound
        report.data["agreement"].append(row)
        report.write()
        result = row["error"] or f"max abs diff {row['max_abs_diff']:.2e}"
        print(f"[{report.elapsed():7.1f}s] agreement n={n} {method}: {result} (bound {bound:g}) "
              f"{'pass' if row['pass'] else 'FAIL'}", flush=True)  # fmt: skip


def benchmark(args: argparse.Namespace, shape: dict[str, int], dtype: torch.dtype, report: Report) -> None:
    device, lengths = args.device, args.lengths
    model = build_model(shape, device, dtype)
    report.data["meta"]["attn_implementation"] = model.config._attn_implementation
    report.data["meta"]["weights_bytes"] = sum(p.numel() * p.element_size() for p in model.parameters())
    print(f"[{report.elapsed():7.1f}s] built {shape['num_hidden_layers']}-layer model in {dtype}", flush=True)
    for n in sorted({*lengths, args.value_zeroing_length}):
        ids = random_ids(n, shape["vocab_size"], device)
        methods = [FORWARD]
        if n in lengths:
            methods += [*LENGTH_MEASURES, *([SHORT_MEASURE] if n == min(lengths) else [])]
        if n == args.value_zeroing_length:
            methods.append(VALUE_ZEROING)
        forward: dict[str, Any] = {}
        for method in methods:
            if method == FORWARD:
                fn: Callable[[], object] = lambda ids=ids: model(input_ids=ids, use_cache=False)  # noqa: E731
            else:
                fn = lambda ids=ids, method=method: context_mixing(model, ids, method)  # noqa: E731
            time_target, peak_target = targets_of(method, n, lengths)
            row = {"method": method, "n": n, "time_target": time_target, "peak_target": peak_target}
            row.update(guarded(lambda fn=fn: timed(fn, device), device))
            if method == FORWARD:
                forward = row
            row["time_ratio"] = _ratio(row.get("seconds"), forward.get("seconds"))
            # The targets compare absolute peaks (weights included), as the H100 forward peaks are stated.
            row["peak_ratio"] = _ratio(row.get("peak_bytes"), forward.get("peak_bytes"))
            row["peak_above_ratio"] = _ratio(row.get("peak_above_bytes"), forward.get("peak_above_bytes"))
            if method != FORWARD and row.get("error") is None:
                row["output_bytes"] = 4 * shape["num_hidden_layers"] * n * n  # the returned float32 matrices
            row["status"], row["missed"] = status_of(row)
            report.data["measurements"].append(row)
            report.write()
            cells = _cells(row)
            print(f"[{report.elapsed():7.1f}s] n={n} {method}: {cells[0]} s, ×{cells[1]} time, {cells[2]} MiB "
                  f"(×{cells[3]}) — {row['status']}", flush=True)  # fmt: skip
            if args.profile and row["missed"]:
                kernels = guarded(lambda fn=fn: {"kernels": top_kernels(fn, device)}, device)
                report.data["profiles"].append({"method": method, "n": n, **kernels})
                report.write()
                print(f"[{report.elapsed():7.1f}s] profiled n={n} {method}", flush=True)
            _free(device)


class Report:
    """The results so far, rewritten to ``gpu_check.json`` and ``gpu_check.md`` after every measurement."""

    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        self.out = out
        self.start = time.perf_counter()
        self.data: dict[str, Any] = {"meta": meta, "measurements": [], "agreement": [], "profiles": []}
        out.mkdir(parents=True, exist_ok=True)

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def write(self) -> None:
        self.data["meta"]["elapsed_s"] = round(self.elapsed(), 1)
        for name, text in (("gpu_check.json", json.dumps(self.data, indent=2)), ("gpu_check.md", markdown(self.data))):
            partial = self.out / f".{name}.partial"
            partial.write_text(text + "\n")
            partial.replace(self.out / name)


def _cells(row: dict[str, Any]) -> tuple[str, ...]:
    """Seconds, time ratio, absolute peak (MiB), its ratio, peak above weights (MiB), its ratio, output (MiB)."""
    if row.get("error"):
        return (row["error"], "", "", "", "", "", "")

    def fmt(value: float | None, spec: str, scale: float = 1.0) -> str:
        return "n/a" if value is None else format(value / scale, spec)

    return (
        fmt(row["seconds"], ".3f"), fmt(row["time_ratio"], ".2f"), fmt(row["peak_bytes"], ".1f", MIB),
        fmt(row["peak_ratio"], ".2f"), fmt(row["peak_above_bytes"], ".1f", MIB), fmt(row["peak_above_ratio"], ".2f"),
        fmt(row.get("output_bytes"), ".1f", MIB),
    )  # fmt: skip


def markdown(data: dict[str, Any]) -> str:
    meta = data["meta"]
    shape = ", ".join(f"{key} {value}" for key, value in meta["shape"].items())
    weights = meta.get("weights_bytes")
    lines = [
        f"# GPU check: {meta['shape_name']}-shaped random model, {meta['dtype']}, {meta['device']}",
        "",
        f"GPU: {meta['gpu'] or 'none'} · torch {meta['torch']} · transformers {meta['transformers']} · "
        f"CUDA {meta['cuda']} · {meta['date']} · {meta['elapsed_s']} s so far",
        "",
        f"Model: bare LlamaModel, {shape}; random weights (seed 0), built directly in {meta['dtype']}"
        f"{'' if weights is None else f' ({weights / MIB:.1f} MiB of weights)'}; baseline forward with "
        f"{meta.get('attn_implementation', 'sdpa')} attention (the measures run eager attention internally); "
        f"memory_budget {meta['memory_budget'] / MIB:.0f} MiB.",
        "",
        f"Time: one warm-up, then the minimum of {REPEATS} runs, synchronized before and after. Peak: "
        "`torch.cuda.max_memory_allocated` during a run, absolute (weights included: the targets compare these) and "
        "above the memory allocated before the call (model weights and input ids); × columns are ratios to the sdpa "
        "forward at the same n. Output: the returned float32 `[1, layer, n, n]` matrices, part of the peak.",
        "",
        f"Targets: peak ≤ {PEAK_TARGET:g}× the forward's at n = {max(meta['lengths'])} (all but value_zeroing); "
        + ", ".join(f"{m} ≤ {t:g}×" for m, t in TIME_TARGETS.items())
        + f" the forward's time at n = {min(meta['lengths'])}.",
        "",
        "## Measures",
        "",
        "| n | method | s | × fwd time | peak (MiB) | × fwd peak | peak above weights (MiB) | × fwd | output (MiB) "
        "| status |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in data["measurements"]:
        lines.append(f"| {row['n']} | {row['method']} | " + " | ".join(_cells(row)) + f" | {row['status']} |")
    lines += ["", f"## {meta['dtype']} vs float32 agreement ({SLICE_LAYERS}-layer slice of the same shape)", ""]
    lines += ["Max abs difference of the row-normalized per-layer matrices (`context_mixing`'s default).", ""]
    lines += ["| n | method | max abs diff | bound | result |", "|---|---|---|---|---|"]
    for row in data["agreement"]:
        diff, result = row["error"] or f"{row['max_abs_diff']:.2e}", "pass" if row["pass"] else "FAIL"
        lines.append(f"| {row['n']} | {row['method']} | {diff} | {row['bound']:g} | {result} |")
    if data["profiles"]:
        unit = "self CUDA ms" if _is_cuda(meta["device"]) else "self CPU ms"
        lines += ["", f"## Profiles of missed targets (top {TOP_KERNELS} by {unit[:-3]} time)"]
    for profile in data["profiles"]:
        lines += ["", f"### {profile['method']}, n = {profile['n']}", ""]
        if profile.get("error"):
            lines.append(f"profiling failed: {profile['error']}")
            continue
        lines += [f"| kernel | {unit} | calls |", "|---|---|---|"]
        for kernel in profile["kernels"]:
            name = kernel["name"].replace("|", "\\|")
            name = name if len(name) <= 100 else name[:97] + "..."
            lines.append(f"| `{name}` | {kernel['self_us'] / 1e3:.3f} | {kernel['calls']} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--tiny", action="store_true", help="the 2-layer toy shape (seconds on a CPU)")
    parser.add_argument("--lengths", type=int, nargs="+", help="default 2048 8192 (tiny: 16 32)")
    parser.add_argument("--value-zeroing-length", type=int, help="default 512 (tiny: 8)")
    parser.add_argument("--slice-length", type=int, help="agreement check length, default 512 (tiny: 16)")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(AGREEMENT_BOUNDS))
    parser.add_argument("--profile", action="store_true", help="profile every measure that misses a target")
    args = parser.parse_args(argv)
    shape_name = "tiny" if args.tiny else "llama-7b"
    for key, value in DEFAULTS[shape_name].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    shape, dtype = SHAPES[shape_name], getattr(torch, args.dtype)
    if max(args.lengths) > shape["max_position_embeddings"]:
        shape = {**shape, "max_position_embeddings": max(args.lengths)}
    meta = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "gpu": torch.cuda.get_device_name(args.device) if _is_cuda(args.device) else None,
        "torch": torch.__version__, "transformers": transformers.__version__, "cuda": torch.version.cuda,
        "python": sys.version.split()[0], "device": args.device, "dtype": args.dtype, "shape_name": shape_name,
        "shape": shape, "lengths": sorted(args.lengths), "value_zeroing_length": args.value_zeroing_length,
        "slice_length": args.slice_length, "memory_budget": DEFAULT_MEMORY_BUDGET, "repeats": REPEATS,
        "peak_convention": "absolute max_memory_allocated (targets); peak_above_bytes: above memory_allocated() before",
    }  # fmt: skip
    report = Report(args.out, meta)
    print(f"{shape_name} shape, {args.dtype}, {args.device} ({meta['gpu']}); writing to {args.out}", flush=True)
    agreement(shape, args.slice_length, args.device, dtype, report)
    _free(args.device)  # the slice models went out of scope
    benchmark(args, shape, dtype, report)
    _free(args.device)
    report.write()
    print(f"[{report.elapsed():7.1f}s] done: {args.out / 'gpu_check.md'}", flush=True)
    return report.data


if __name__ == "__main__":
    main()
