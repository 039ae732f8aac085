"""Corpus runs on many processes: shard a dataset over PyTorch distributed ranks, stream each shard's rows to Parquet,
and resume an interrupted run by skipping what is already written.

Launch with ``torchrun --nproc_per_node N`` or ``accelerate launch`` (which set ``RANK``/``WORLD_SIZE``; gloo on CPU,
NCCL on GPUs), or run one process. Rank ``r`` of ``w`` takes the examples ``i ≡ r (mod w)`` that are not finished.
Rows are written in parts of ``flush_every`` examples, each part written to a hidden temporary file and renamed
into place, so a killed run leaves only complete parts; every (example, method) pair appears in at most one part.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

Job = Callable[[list[str], list[int]], list[dict[str, Any]]]
"""Computes the rows of a batch of texts (dataset indices given); each row names its ``example`` and ``method``."""


@dataclass(frozen=True)
class Shard:
    """This process's place in the run: rank, world size and the device it computes on."""

    rank: int
    world: int
    device: str

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@contextmanager
def distributed(device: str | None = None) -> Iterator[Shard]:
    """This process's shard; joins the process group when launched with several processes (and leaves it after)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    if world == 1:
        yield Shard(rank=0, world=1, device=device)
        return
    import torch.distributed as dist

    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    try:
        yield Shard(rank=dist.get_rank(), world=dist.get_world_size(), device=device)
    finally:
        dist.destroy_process_group()


def barrier(shard: Shard) -> None:
    """Wait for every rank (no-op in one process)."""
    if shard.world > 1:
        import torch.distributed as dist

        dist.barrier()


def finished(output: Path) -> set[tuple[int, str]]:
    """The (example, method) pairs already written under ``output`` by any rank of any earlier run."""
    import pyarrow.parquet as pq

    done: set[tuple[int, str]] = set()
    for part in sorted(output.glob("part-*.parquet")):
        table = pq.read_table(part, columns=["example", "method"])
        done.update(zip(table.column("example").to_pylist(), table.column("method").to_pylist(), strict=True))
    return done


def read_rows(output: str | Path) -> Any:
    """Every row written under ``output``, as one pandas DataFrame sorted by example and method."""
    import pandas as pd

    parts = sorted(Path(output).glob("part-*.parquet"))
    if not parts:
        raise FileNotFoundError(f"No result parts under {str(output)!r}.")
    frame = pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)
    order = [c for c in ("example", "method", "metric", "bin") if c in frame.columns]
    return frame.sort_values(order, kind="stable").reset_index(drop=True)


def _write_part(rows: list[dict[str, Any]], output: Path, rank: int) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    name = f"part-r{rank:04d}-{time.time_ns()}.parquet"
    temporary = output / f".{name}.tmp"
    pq.write_table(pa.Table.from_pylist(rows), temporary)
    os.replace(temporary, output / name)  # atomic: a part is complete or absent


def run_shard(
    job: Job,
    texts: Sequence[str],
    methods: Sequence[str],
    output: str | Path,
    shard: Shard,
    *,
    batch_size: int = 8,
    flush_every: int = 64,
    progress: bool = True,
) -> int:
    """Compute and write this shard's unfinished examples; returns how many examples it computed."""
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    done = finished(output)
    todo = [i for i in range(shard.rank, len(texts), shard.world) if any((i, m) not in done for m in methods)]
    pending: list[dict[str, Any]] = []
    pending_examples = 0
    bar = tqdm(total=len(todo), desc=f"rank {shard.rank}/{shard.world}", unit="example",
               disable=not progress, position=shard.rank)  # fmt: skip
    with bar:
        for start in range(0, len(todo), batch_size):
            indices = todo[start : start + batch_size]
            rows = job([texts[i] for i in indices], indices)
            pending += [r for r in rows if (r["example"], r["method"]) not in done]
            pending_examples += len(indices)
            bar.update(len(indices))
            if pending_examples >= flush_every:
                _write_part(pending, output, shard.rank)
                pending, pending_examples = [], 0
        if pending:
            _write_part(pending, output, shard.rank)
    return len(todo)
