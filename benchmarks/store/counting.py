"""Store traffic per request, counted by the servers themselves around a batch of requests.

Nothing in any client is patched: before and after a batch of `PROBE_REQUESTS`
requests of one setup, the benchmark asks the server what it has served so far,
and divides the difference by the number of requests.

- redis: ``INFO`` gives ``total_reads_processed`` (one per request a client
  sent and the server read: a round trip; a pipeline read at once counts once)
  and ``commandstats`` (every command run, including those a Lua script runs).
  The ``INFO`` call that closes a batch is itself one read and is subtracted;
  ``INFO`` commands are left out of the command counts.
- memcached: ``stats`` counters. ``cmd_get`` counts ``get``/``gets``,
  ``cmd_touch`` counts ``gat``/``gats``/``touch``, ``cmd_set`` counts every
  storage command, of which ``cas_hits + cas_misses + cas_badval`` are ``cas``.
  memcached cannot tell ``gat`` from ``gats`` or ``get`` from ``gets``, which
  cost the same; the floor's replay uses the variant that also returns a cas token.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis

from .floors import TTL, MemcacheFloor, Plan, memcache_client
from .harness import Setup, new_browser, send_requests
from .setups import FLOOR_MC_SYNC, SK_MC_SYNC, SK_REDIS_SYNC, Environment

__all__ = [
    "PROBE_REQUESTS",
    "MemcacheCounters",
    "Probe",
    "RedisCounters",
    "ServerCount",
    "adopt_sessionkit_memcache",
    "check_sessionkit_ttl",
    "memcache_plan",
    "probe",
    "probe_all",
]

#: Requests per workload in the probe.
PROBE_REQUESTS = 20

#: memcached counters -> the commands each one counts.
_MC_COUNTERS = {
    "get|gets": ("cmd_get",),
    "gat|gats|touch": ("cmd_touch",),
    "delete": ("delete_hits", "delete_misses"),
    "incr|decr": ("incr_hits", "incr_misses", "decr_hits", "decr_misses"),
    "flush_all": ("cmd_flush",),
}
_MC_CAS = ("cas_hits", "cas_misses", "cas_badval")


@dataclass
class ServerCount:
    """What a server served during one batch: round trips, and commands by name."""

    trips: int
    commands: Counter[str] = field(default_factory=Counter)


class RedisCounters:
    """``INFO`` snapshots of one redis-server, on a connection of their own."""

    def __init__(self, host: str, port: int) -> None:
        self.client = redis.Redis(host=host, port=port)

    def _snapshot(self) -> tuple[int, Counter[str]]:
        info = self.client.info("all")
        calls = Counter({name.removeprefix("cmdstat_").upper(): int(stats["calls"])
                         for name, stats in info.items() if name.startswith("cmdstat_")})
        return int(info["total_reads_processed"]), calls

    def start(self) -> tuple[int, Counter[str]]:
        return self._snapshot()

    def since(self, before: tuple[int, Counter[str]]) -> ServerCount:
        reads, calls = self._snapshot()
        commands = calls - before[1]
        del commands["INFO"]
        return ServerCount(reads - before[0] - 1, commands)  # - 1: the INFO just sent

    def pttl(self, pattern: str, key_type: str) -> list[int]:
        """The remaining TTL (ms) of every key of `key_type` matching `pattern`."""
        return [int(self.client.pttl(key)) for key in self.client.scan_iter(match=pattern, _type=key_type)]

    def close(self) -> None:
        self.client.close()


class MemcacheCounters:
    """``stats`` snapshots of one memcached, on a connection of their own."""

    def __init__(self, host: str, port: int) -> None:
        self.client = memcache_client(host, port)

    def _snapshot(self) -> dict[str, int]:
        return {name.decode("ascii"): int(value) for name, value in self.client.stats().items()
                if isinstance(value, int)}

    def start(self) -> dict[str, int]:
        return self._snapshot()

    def since(self, before: dict[str, int]) -> ServerCount:
        after = self._snapshot()

        def delta(*names: str) -> int:
            return sum(after.get(name, 0) - before.get(name, 0) for name in names)

        commands: Counter[str] = Counter()
        for label, names in _MC_COUNTERS.items():
            commands[label] = delta(*names)
        commands["cas"] = delta(*_MC_CAS)
        commands["set|add|replace|append|prepend"] = delta("cmd_set") - commands["cas"]
        commands = +commands  # drop the zeros
        return ServerCount(sum(commands.values()), commands)

    def close(self) -> None:
        self.client.close()


@dataclass
class Probe:
    """Per request, as the server saw it: round trips and commands, for reads and for writes."""

    read_trips: float
    write_trips: float
    read_commands: float
    write_commands: float
    read_detail: str
    write_detail: str
    #: memcache only: the commands per request as a floor plan (empty if they were not the same every request).
    read_plan: Plan = field(default_factory=list)
    write_plan: Plan = field(default_factory=list)


def _detail(commands: Counter[str], requests: int) -> str:
    """``EVALSHA x1, HGETALL x1`` per request, by name."""
    if not commands:
        return "none"
    return ", ".join(f"{name} x{count / requests:g}" for name, count in sorted(commands.items()))


def memcache_plan(commands: Counter[str], requests: int) -> Plan:
    """The floor plan that repeats what memcached served per request: fetches first, one store operation each.

    Empty if a counter is not a whole multiple of `requests` (the requests did
    not all do the same) or holds a command the floor cannot replay.
    """
    per_request: dict[str, int] = {}
    for name, count in commands.items():
        if count % requests:
            return []
        per_request[name] = count // requests
    replay = {"gat|gats|touch": "gats", "get|gets": "gets", "cas": "cas", "set|add|replace|append|prepend": "set"}
    if set(per_request) - set(replay):
        return []
    return [[replay[name]] for name in replay for _ in range(per_request.get(name, 0))]


def probe(setup: Setup, loop: asyncio.AbstractEventLoop, redis_counters: RedisCounters,
          memcache_counters: MemcacheCounters) -> Probe:
    """Count one setup's store traffic over PROBE_REQUESTS reads, then as many writes, of one session."""
    setup.reset()
    browser = new_browser(setup)
    send_requests(setup, browser, "/write", 1, loop)  # create the session, uncounted
    counters: Any = redis_counters if setup.store == "redis" else memcache_counters
    results: dict[str, tuple[ServerCount, str]] = {}
    for workload, path in (("read", "/read"), ("write", "/write")):
        before = counters.start()
        last = send_requests(setup, browser, path, PROBE_REQUESTS, loop)
        served: ServerCount = counters.since(before)
        expected = 1 if workload == "read" else 1 + PROBE_REQUESTS
        if last.body != str(expected).encode("ascii"):
            raise AssertionError(f"{setup.name}: probe {workload} got {last.body!r}, expected {expected}")
        results[workload] = (served, _detail(served.commands, PROBE_REQUESTS))
    (read, read_detail), (write, write_detail) = results["read"], results["write"]
    plans: tuple[Plan, Plan] = ([], [])
    if setup.store == "memcache":
        plans = (memcache_plan(read.commands, PROBE_REQUESTS), memcache_plan(write.commands, PROBE_REQUESTS))
    return Probe(read.trips / PROBE_REQUESTS, write.trips / PROBE_REQUESTS,
                 sum(read.commands.values()) / PROBE_REQUESTS, sum(write.commands.values()) / PROBE_REQUESTS,
                 read_detail, write_detail, *plans)


def check_sessionkit_ttl(redis_counters: RedisCounters, notes: list[str]) -> None:
    """Note whether sessionkit's redis keys expire after the floors' TTL.

    Its keys are hashes at ``session:<id>`` (its default prefix); Flask-Session
    uses the same prefix for plain strings, hence the type.
    """
    ttls = redis_counters.pttl("session:*", "hash")
    if not ttls:
        notes.append("could not check sessionkit's idle timeout: no session:* key in redis")
        return
    longest = max(ttls) / 1000
    if abs(longest - TTL) > 60:
        notes.append(f"sessionkit's redis keys expire after {longest:.0f} s, the floors and peers after {TTL} s: "
                     "the floors do NOT match sessionkit's idle timeout")


def adopt_sessionkit_memcache(sk: Probe | None, floor: MemcacheFloor, notes: list[str]) -> None:
    """Let the memcache floor replay what memcached served for sessionkit, and say so."""
    if sk is None:
        notes.append(f"memcache floor: the default plan (read {floor.read_plan}, write {floor.write_plan}); "
                     "no sessionkit memcache row to match")
        return
    if not sk.read_plan or not sk.write_plan:
        notes.append(f"memcache floor: memcached's counters for sessionkit do not form a plan the floor can replay "
                     f"(read: {sk.read_detail}; write: {sk.write_detail}); the default plan stays")
        return
    why = floor.adopt(sk.read_plan, sk.write_plan)
    if why:
        notes.append(f"memcache floor: does NOT match sessionkit ({why}); the default plan stays")
    else:
        notes.append(f"memcache floor: replays what memcached served for sessionkit, one thread hop per command "
                     f"in the async floor: read {sk.read_plan}, write {sk.write_plan}")


def probe_all(setups: list[Setup], env: Environment, loop: asyncio.AbstractEventLoop) -> dict[str, Probe]:
    """Probe every store-backed setup, sessionkit's first; the memcache floor then adopts sessionkit's commands."""
    redis_counters = RedisCounters(env.redis_host, env.redis_port)
    memcache_counters = MemcacheCounters(env.memcache_host, env.memcache_port)
    probes: dict[str, Probe] = {}
    try:
        ordered = sorted((s for s in setups if s.store), key=lambda s: not s.name.startswith("sessionkit"))
        for setup in ordered:
            if setup.name == FLOOR_MC_SYNC and env.memcache_floor is not None:
                adopt_sessionkit_memcache(probes.get(SK_MC_SYNC), env.memcache_floor, env.notes)
            probes[setup.name] = probe(setup, loop, redis_counters, memcache_counters)
            if setup.name == SK_REDIS_SYNC:
                check_sessionkit_ttl(redis_counters, env.notes)
    finally:
        redis_counters.close()
        memcache_counters.close()
    return probes
