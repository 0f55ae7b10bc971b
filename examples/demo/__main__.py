"""``python -m examples.demo``: start both services (``--help`` for the options)."""

from __future__ import annotations

import sys

from .run import main

__all__: list[str] = []

if __name__ == "__main__":
    sys.exit(main())
