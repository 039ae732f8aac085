"""Query-chunking under a memory budget."""

from __future__ import annotations

from collections.abc import Iterator

DEFAULT_MEMORY_BUDGET = 1 << 30
"""Default bytes a measure may use for its per-chunk intermediates (1 GiB)."""

CPU_SLICE_BYTES = 1 << 20
"""On CPU, elementwise passes over ``[query, key]`` slices of about this size stay in a core's cache (at n = 2048
they run twice as fast as passes over whole matrices)."""


def query_chunks(n_queries: int, bytes_per_query: int, memory_budget: int) -> Iterator[slice]:
    """Yield slices over query positions so that each chunk's intermediates fit in ``memory_budget`` bytes.

    A chunk always holds at least one query, so a tiny budget slows the computation down instead of failing.
    """
    if memory_budget <= 0:
        raise ValueError(f"memory_budget must be a positive number of bytes; got {memory_budget}.")
    size = max(1, min(n_queries, memory_budget // max(1, bytes_per_query)))
    for start in range(0, n_queries, size):
        yield slice(start, min(start + size, n_queries))
