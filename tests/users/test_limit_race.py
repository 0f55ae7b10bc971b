"""The per-user limit holds against logins racing on two processes (real processes, one store)."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import pytest

from sessionkit.naming import stored_name

from .helpers import login, manager

LOGINS_PER_PROCESS = 25
LIMIT = 3


def _racer(url: str, start_at: float, policy: str, results: Any) -> None:
    m = manager(url, max_sessions_per_user=LIMIT, on_limit=policy)
    refused = 0
    created = []
    while time.time() < start_at:  # both processes start logging in at the same instant
        pass
    for _ in range(LOGINS_PER_PROCESS):
        try:
            _, session = login(m, "alice")
            created.append(session.id)
        except Exception as exc:
            if type(exc).__name__ != "SessionLimitReached":
                raise
            refused += 1
    results.put((os.getpid(), created, refused))
    m.close()


def _race(url: str, policy: str) -> tuple[list[str], int]:
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    start_at = time.time() + 3.0
    racers = [context.Process(target=_racer, args=(url, start_at, policy, results)) for _ in range(2)]
    for racer in racers:
        racer.start()
    outcomes = [results.get(timeout=60) for _ in racers]
    for racer in racers:
        racer.join(30)
        assert racer.exitcode == 0
    assert len({pid for pid, _, _ in outcomes}) == 2
    return [sid for _, created, _ in outcomes for sid in created], sum(refused for _, _, refused in outcomes)


@pytest.fixture(params=["file", "redis", "redis-cluster"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return f"file://{tmp_path}/sessions"
    if request.param == "redis":
        return str(request.getfixturevalue("redis_url"))
    return str(request.getfixturevalue("redis_cluster_url"))


@pytest.mark.parametrize("policy", ["evict-oldest", "refuse"])
def test_two_processes_never_leave_more_than_the_limit(shared_url: str, policy: str) -> None:
    created, refused = _race(shared_url, policy)
    m = manager(shared_url)
    live = [sid for sid in created if m.status(_cookie(m, sid)) is not None]
    indexed = {entry.name for entry in m.sessions_for("alice")}
    if policy == "evict-oldest":
        assert len(created) == 2 * LOGINS_PER_PROCESS and refused == 0
        assert len(live) == LIMIT
    else:
        assert len(created) == LIMIT and refused == 2 * LOGINS_PER_PROCESS - LIMIT
        assert len(live) == LIMIT
    assert indexed == {stored_name(sid) for sid in live}
    m.close()


def _cookie(m: Any, session_id: str) -> str:
    return f"{m.codec.name}={m.codec.signer.sign(session_id)}"
