"""``python -m benchmarks.store_bench``: the former name of ``python -m benchmarks.store``, kept as an alias."""

from __future__ import annotations

import sys

from .store.__main__ import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
