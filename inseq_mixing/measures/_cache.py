"""Sharing work between measures that read the same layer record in one pass.

A record (or a value derived from it) keeps the intermediate results measures have in common — the attention's
per-head parts, the head vectors through a given chain of norms, their α-weighted Gram quadratic form — so that
``context_mixing(model, ids, ["attention_norm", "attention_norm_res", "globenc"])`` computes each once per layer.
Records are immutable and dropped after their layer, so nothing outlives the layer it belongs to.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def memo(owner: Any, key: Hashable, compute: Callable[[], T]) -> T:
    """``compute()`` once per ``(owner, key)``: stored on the (frozen) owner, returned on later calls."""
    store = owner.__dict__.setdefault("_memo", {})
    if key not in store:
        store[key] = compute()
    return store[key]


def identity_key(objects: Sequence[Any]) -> tuple[int, ...]:
    """A key naming a sequence of objects by identity (the norms of one record)."""
    return tuple(id(obj) for obj in objects)
