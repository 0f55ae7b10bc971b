"""The commit A/B benchmark's worker measures a tree that really counts, and refuses one that does not."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.commits import worker

ROOT = Path(__file__).resolve().parents[2]


def test_times_gives_every_row_for_every_store(redis_url: str) -> None:
    urls = {"memory": "memory://", "redis": redis_url, "cookie": "cookie://"}
    out = subprocess.run([sys.executable, str(Path(worker.__file__)), "times", json.dumps(urls), "20"],
                         env={"PYTHONPATH": str(ROOT)}, capture_output=True, text=True, check=True)
    added = json.loads(out.stdout)
    assert set(added) == {f"{store} {op}" for store in urls for op in ("read", "write")}
    assert all(isinstance(value, float) for value in added.values())


def test_a_session_that_does_not_count_is_refused() -> None:
    app = worker.middleware("memory://")
    worker.check(app)  # the real middleware counts
    app.manager.save = lambda session, status=200: []  # type: ignore[method-assign]  # a layer that never saves
    with pytest.raises(SystemExit, match="did not count"):
        worker.check(app)
