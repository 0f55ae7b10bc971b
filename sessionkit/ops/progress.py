"""A progress bar for walks that take more than a moment, when ``sessionkit[progress]`` (tqdm) is installed.

Without tqdm, or when stderr is not a terminal, the iterable is returned as it
is: no import, no wrapper, no cost.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import TextIO, TypeVar

__all__ = ["DELAY_SECONDS", "with_progress"]

_T = TypeVar("_T")

#: A walk shorter than this shows no bar at all.
DELAY_SECONDS = 1.0


def with_progress(items: Iterable[_T], *, label: str, enabled: bool = True,
                  stream: TextIO | None = None) -> Iterable[_T]:
    """`items`, drawn as a bar on `stream` (default stderr) if it is a terminal and tqdm is installed."""
    stream = sys.stderr if stream is None else stream
    if not enabled or not stream.isatty():
        return items
    try:
        from tqdm import tqdm  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return items
    bar: Iterable[_T] = tqdm(items, desc=label, unit=" sessions", delay=DELAY_SECONDS, file=stream, leave=False)
    return bar
