"""Giving memory back after a burst of disconnects: what the connections left behind, and the heap's free pages.

When a thousand push connections close, their objects are freed (many only
by the cyclic garbage collector: a connection's tasks, futures and protocol
refer to each other) but the process stays as large as it was with all of them
open, for two reasons:

- each connection left a few small, long-lived objects behind, allocated
  among its own: the entries for its session in the id caches
  (`naming.stored_name`, the cookie headers and values that verified).
  Bounded, but each one keeps a page of the heap in use (under pymalloc,
  CPython's default allocator, a whole 1 MiB arena);
- glibc returns freed memory to the system only from the top of its heap;
  free pages in the middle stay resident until ``malloc_trim(0)``.

All of it is cheap to give back once, after the burst: the caches refill
with the sessions still in use (one hash each, on their next request); a full
collection (so the connections are really gone) costs what the interpreter
would spend on its next one anyway; trimming a heap of about 60 MB takes a few
milliseconds. How much comes back depends on the allocator: see
the deployment notes in docs/per-user.md (``PYTHONMALLOC=malloc``).
"""

from __future__ import annotations

import ctypes
import functools
import gc
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from ..naming import stored_name

if TYPE_CHECKING:
    from ..manager import SessionManager

__all__ = ["Remembers", "forget_remembered_ids", "release_memory", "trim_heap"]


@runtime_checkable
class Remembers(Protocol):
    """A cache of verified cookies: `codec.KnownHeaders`, `codec.IdSigner`, `express.ConnectSigner`."""

    def forget(self) -> None:
        """Drop everything remembered."""


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS, Windows)."""
    try:
        function = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function


def trim_heap() -> bool:
    """Return the C heap's free pages to the system (glibc); False where that cannot be done."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def forget_remembered_ids(manager: SessionManager) -> None:
    """Empty the caches that name sessions by id; they refill with the sessions still in use."""
    stored_name.cache_clear()
    strategy = manager.strategy
    codec = getattr(strategy, "codec", None)
    for cache in (getattr(strategy, "known", None), getattr(codec, "known", None), getattr(codec, "signer", None)):
        if isinstance(cache, Remembers):
            cache.forget()


def release_memory(manager: SessionManager) -> bool:
    """Forget, collect, trim, in that order (each frees what the next gives back); True if trimmed."""
    forget_remembered_ids(manager)
    gc.collect()
    return trim_heap()
