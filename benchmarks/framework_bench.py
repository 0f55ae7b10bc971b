"""sessionkit inside real frameworks (Starlette, Flask), against each framework's own and peer session layers.

The harness is the store benchmark's (``benchmarks.store``, and so wsgi_bench's): the same counter app
(``/write`` increments ``session["count"]``, ``/read`` returns it; the read
workload starts with one untimed ``/write``), in-process calls (WSGI directly,
ASGI through the in-process driver), a browser that keeps cookies, interleaved
rounds in shuffled order, and a result check after every workload (the final
counter; for sessionkit also its ``Set-Cookie`` books), so a setup that stops
saving or loading fails instead of looking fast. It starts its own redis-server
(``testservers``) and stops it by pid at the end, also on an error or SIGTERM.

Three groups, each measured in its own interleaved run, each row against its
own bare framework app (``added µs`` = row minus that bare app, per round):

1. ASGI, in a Starlette app: sessionkit's ASGI middleware on ``memory://`` and
   ``redis://``, Starlette's own ``SessionMiddleware`` (signed cookie), and
   starsessions on redis and on its ``InMemoryStore``. Targets: sessionkit on
   memory within 1.5x of Starlette's middleware (total µs, read and write), and
   ahead of starsessions in memory (added µs over bare Starlette, read and write).
2. Flask: Flask's default cookie session, sessionkit's Flask adapter on
   ``redis://``, and Flask-Session on redis. Target: sessionkit costs less per
   request than Flask-Session (read and write).
3. Cookie sessions: sessionkit ``cookie://`` (signed) and ``cookie://?encrypt=1``
   through the ASGI middleware against Starlette's ``SessionMiddleware``, and
   through the Flask adapter against Flask's cookie session. Targets (Starlette
   side): signed no slower, encrypted within 1.5x. The Flask side is shown only.

Ratios are per round (both sides ran moments apart), then the median over rounds.

Run: ``python -m benchmarks.framework_bench [--rounds 10] [--requests 500] [--json PATH]``;
``--profile asgi-memory`` (or another name in ``--help``) instead cProfiles one sessionkit setup.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import re
import signal
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sessionkit import SessionManager
from sessionkit.adapters.asgi import SessionMiddleware as SessionkitASGIMiddleware
from testservers import RedisServer

from .store.floors import TTL
from .store.harness import Results, Setup, close_setups, exit_on_sigterm, measure, profile, ratio, warm_up
from .store.setups import (
    BARE_FLASK,
    BARE_STARLETTE,
    FLASK_SESSION,
    STARSESSIONS,
    Environment,
    flask_app,
    peer_setups,
    starlette_app,
)
from .wsgi_bench import SECRET_KEY, WORKLOADS, bench_parser, parse_bench_args

# Row names. The bare apps and the two peers on redis are the store benchmark's own setups (its peer_setups).
SK_ASGI_MEMORY, SK_ASGI_REDIS = "sessionkit ASGI memory://", "sessionkit ASGI redis://"
STARSESSIONS_MEMORY = "starsessions memory"
STARLETTE_COOKIE = "Starlette SessionMiddleware"
FLASK_COOKIE = "Flask cookie session"
SK_FLASK_REDIS = "sessionkit Flask redis://"
SK_ASGI_SIGNED, SK_ASGI_ENCRYPTED = "sessionkit ASGI cookie://", "sessionkit ASGI cookie://?encrypt=1"
SK_FLASK_SIGNED, SK_FLASK_ENCRYPTED = "sessionkit Flask cookie://", "sessionkit Flask cookie://?encrypt=1"

#: Limits on the median per-round ratio of total µs per request.
ASGI_MEMORY_LIMIT = 1.5
FLASK_REDIS_LIMIT = 1.0  # strictly below: sessionkit must cost less
SIGNED_LIMIT = 1.0
ENCRYPTED_LIMIT = 1.5
#: On the median per-round ratio of *added* µs (each side over bare Starlette): strictly below, sessionkit ahead.
STARSESSIONS_MEMORY_LIMIT = 1.0

#: --profile NAME -> (group, row).
PROFILE_TARGETS = {
    "asgi-memory": ("asgi", SK_ASGI_MEMORY), "asgi-redis": ("asgi", SK_ASGI_REDIS),
    "flask-redis": ("flask", SK_FLASK_REDIS),
    "cookie-signed": ("cookie", SK_ASGI_SIGNED), "cookie-encrypted": ("cookie", SK_ASGI_ENCRYPTED),
    "flask-cookie-signed": ("cookie", SK_FLASK_SIGNED), "flask-cookie-encrypted": ("cookie", SK_FLASK_ENCRYPTED),
}  # fmt: skip


# -- setups ----------------------------------------------------------------------------------------------


def sessionkit_starlette(name: str, url: str) -> Setup:
    """sessionkit's own ASGI middleware in the Starlette counter app (``request.session`` is ``scope["session"]``)."""
    from starlette.middleware import Middleware

    manager = SessionManager(url, secret_keys=[SECRET_KEY])
    app = starlette_app([Middleware(SessionkitASGIMiddleware, manager=manager)], lambda request: request.session)
    return Setup(name, "asgi", app, BARE_STARLETTE, strict_cookies=True,
                 close=manager.close, aclose=manager.aclose)


def sessionkit_flask(name: str, url: str) -> Setup:
    """sessionkit's Flask adapter (``SessionKit(app, manager=...)``) in the Flask counter app."""
    import flask

    from sessionkit.adapters.flask import SessionKit

    manager = SessionManager(url, secret_keys=[SECRET_KEY])
    app = flask_app(re.sub(r"\W+", "_", name), lambda: flask.session)
    SessionKit(app, manager=manager)
    return Setup(name, "wsgi", app, BARE_FLASK, strict_cookies=True, close=manager.close)


def starlette_cookie() -> Setup:
    """Starlette's own SessionMiddleware: the session in a cookie signed by itsdangerous, its defaults."""
    from starlette.middleware import Middleware
    from starlette.middleware.sessions import SessionMiddleware

    app = starlette_app([Middleware(SessionMiddleware, secret_key=SECRET_KEY)], lambda request: request.session)
    return Setup(STARLETTE_COOKIE, "asgi", app, BARE_STARLETTE)


def starsessions_memory(notes: list[str]) -> list[Setup]:
    """starsessions on its own in-memory store, set up as the redis row is (one day, rolling); [] if not installed."""
    try:
        from starlette.middleware import Middleware
        from starsessions import SessionAutoloadMiddleware
        from starsessions import SessionMiddleware as StarSessionMiddleware
        from starsessions.stores.memory import InMemoryStore
    except ImportError as exc:
        notes.append(f"{STARSESSIONS_MEMORY} left out: {exc} (pip install -e '.[bench]')")
        return []
    middleware = [Middleware(StarSessionMiddleware, store=InMemoryStore(), lifetime=TTL, rolling=True),
                  Middleware(SessionAutoloadMiddleware)]
    app = starlette_app(middleware, lambda request: request.session)
    return [Setup(STARSESSIONS_MEMORY, "asgi", app, BARE_STARLETTE)]


def flask_cookie() -> Setup:
    """Flask's default session (a cookie signed by itsdangerous): ``SECRET_KEY`` set, no extension."""
    import flask

    app = flask_app("flask_cookie", lambda: flask.session)
    app.config["SECRET_KEY"] = SECRET_KEY
    return Setup(FLASK_COOKIE, "wsgi", app, BARE_FLASK)


@dataclass
class Comparison:
    """``row / ref`` per round, median: a verdict if `limit` is set, else shown for information."""

    row: str
    ref: str
    limit: float | None = None
    strict: bool = False  # True: the ratio must stay below the limit, not just reach it
    on_added: bool = False  # True: judged on the ratio of added µs (each over its bare app), not of total µs


@dataclass
class Group:
    key: str
    title: str
    setups: list[Setup]
    #: Each row's reference for the "x ref" columns (rows without one show "-").
    refs: dict[str, str]
    comparisons: list[Comparison]
    notes: list[str] = field(default_factory=list)
    results: Results | None = None


def _pick(setups: list[Setup], *names: str) -> list[Setup]:
    """`names` from `setups`, in that order; a name missing (its package not installed) is skipped."""
    by_name = {setup.name: setup for setup in setups}
    return [by_name[name] for name in names if name in by_name]


def _peers(env: Environment, group_setups: list[Setup]) -> list[Setup]:
    """The store benchmark's peer setups (bare Flask/Starlette, Flask-Session, starsessions), each with its documented
    redis setup; the ones this group does not use are remembered for closing too."""
    peers = peer_setups(env)
    group_setups.extend(peers)
    return peers


def build_groups(env: Environment, only: str | None = None) -> tuple[list[Group], list[Setup]]:
    """The three groups (or just `only`), and every setup built, for closing."""
    built: list[Setup] = []
    groups: list[Group] = []
    redis_url = env.redis_url

    if only in (None, "asgi"):
        peers = _peers(env, built)
        own = [sessionkit_starlette(SK_ASGI_MEMORY, "memory://"), sessionkit_starlette(SK_ASGI_REDIS, redis_url),
               starlette_cookie(), *starsessions_memory(env.notes)]
        built += own
        setups = _pick([*peers, *own], BARE_STARLETTE, SK_ASGI_MEMORY, SK_ASGI_REDIS, STARLETTE_COOKIE, STARSESSIONS,
                       STARSESSIONS_MEMORY)
        groups.append(Group(
            "asgi", "1. ASGI: a Starlette app; every row vs bare Starlette",
            setups, {SK_ASGI_MEMORY: STARLETTE_COOKIE, SK_ASGI_REDIS: STARSESSIONS, STARSESSIONS: STARLETTE_COOKIE,
                     STARSESSIONS_MEMORY: SK_ASGI_MEMORY},
            [Comparison(SK_ASGI_MEMORY, STARLETTE_COOKIE, ASGI_MEMORY_LIMIT),
             Comparison(SK_ASGI_MEMORY, STARSESSIONS_MEMORY, STARSESSIONS_MEMORY_LIMIT, strict=True, on_added=True),
             Comparison(SK_ASGI_REDIS, STARSESSIONS)],
        ))  # fmt: skip

    if only in (None, "flask"):
        peers = _peers(env, built)
        own = [flask_cookie(), sessionkit_flask(SK_FLASK_REDIS, redis_url)]
        built += own
        setups = _pick([*peers, *own], BARE_FLASK, FLASK_COOKIE, SK_FLASK_REDIS, FLASK_SESSION)
        groups.append(Group(
            "flask", "2. Flask: every row vs bare Flask (no session use)",
            setups, {SK_FLASK_REDIS: FLASK_SESSION, FLASK_COOKIE: FLASK_SESSION},
            [Comparison(SK_FLASK_REDIS, FLASK_SESSION, FLASK_REDIS_LIMIT, strict=True)],
        ))  # fmt: skip

    if only in (None, "cookie"):
        peers = _peers(env, built)
        own = [sessionkit_starlette(SK_ASGI_SIGNED, "cookie://"),
               sessionkit_starlette(SK_ASGI_ENCRYPTED, "cookie://?encrypt=1"), starlette_cookie(),
               sessionkit_flask(SK_FLASK_SIGNED, "cookie://"),
               sessionkit_flask(SK_FLASK_ENCRYPTED, "cookie://?encrypt=1"), flask_cookie()]
        built += own
        setups = _pick([*peers, *own], BARE_STARLETTE, SK_ASGI_SIGNED, SK_ASGI_ENCRYPTED, STARLETTE_COOKIE,
                       BARE_FLASK, SK_FLASK_SIGNED, SK_FLASK_ENCRYPTED, FLASK_COOKIE)
        groups.append(Group(
            "cookie", "3. Cookie sessions: Starlette rows vs bare Starlette, Flask rows vs bare Flask",
            setups,
            {SK_ASGI_SIGNED: STARLETTE_COOKIE, SK_ASGI_ENCRYPTED: STARLETTE_COOKIE,
             SK_FLASK_SIGNED: FLASK_COOKIE, SK_FLASK_ENCRYPTED: FLASK_COOKIE},
            [Comparison(SK_ASGI_SIGNED, STARLETTE_COOKIE, SIGNED_LIMIT),
             Comparison(SK_ASGI_ENCRYPTED, STARLETTE_COOKIE, ENCRYPTED_LIMIT),
             Comparison(SK_FLASK_SIGNED, FLASK_COOKIE), Comparison(SK_FLASK_ENCRYPTED, FLASK_COOKIE)],
        ))  # fmt: skip
    return groups, built


# -- ratios, verdicts and the tables -----------------------------------------------------------------------


def total_ratio(results: Results, row: str, ref: str, workload: str) -> float:
    """Median over rounds of row µs / ref µs in the same round."""
    return statistics.median(results.per_round(row, ref, workload, ratio))


def added_ratio(results: Results, row: str, ref: str, workload: str) -> float:
    """Median over rounds of row added µs / ref added µs (each over its own bare app) in the same round."""
    return statistics.median([ratio(a, b) for a, b in zip(results.added(row, workload),
                                                           results.added(ref, workload), strict=True)])


@dataclass
class Verdict:
    group: str
    label: str
    value: float  # median per-round ratio judged: of total µs, or of added µs if on_added
    limit: float | None
    strict: bool
    added: float  # median per-round ratio of added µs
    row_added: float
    ref_added: float
    on_added: bool = False

    @property
    def met(self) -> bool | None:
        if self.limit is None:
            return None
        return self.value < self.limit if self.strict else self.value <= self.limit

    @property
    def relation(self) -> str:
        return "<" if self.strict else "<="

    @property
    def margin(self) -> float | None:
        """How far the ratio is from its limit, as a fraction of the limit (negative: over it)."""
        return None if self.limit is None else (self.limit - self.value) / self.limit


def compare(group: Group) -> list[Verdict]:
    results = group.results
    assert results is not None
    out = []
    for c in group.comparisons:
        if not (results.has(c.row) and results.has(c.ref)):
            group.notes.append(f"{c.row} vs {c.ref}: not compared ({c.row if not results.has(c.row) else c.ref} "
                               "was not measured)")
            continue
        for workload in WORKLOADS:
            added = added_ratio(results, c.row, c.ref, workload)
            value = added if c.on_added else total_ratio(results, c.row, c.ref, workload)
            label = f"{c.row} / {c.ref}, {workload}" + (", added µs" if c.on_added else "")
            out.append(Verdict(
                group.key, label, value, c.limit, c.strict, added,
                statistics.median(results.added(c.row, workload)), statistics.median(results.added(c.ref, workload)),
                c.on_added,
            ))  # fmt: skip
    return out


def format_table(group: Group) -> str:
    results = group.results
    assert results is not None
    header = ("setup", "workload", "µs/req", "min µs", "added µs", "x bare", "ref", "x ref", "added x ref")
    rows = [header]
    for setup in results.setups:
        for workload in WORKLOADS:
            s = results.summary(setup.name, workload)
            cells = [setup.name, workload, f"{s['median_us']:.1f}", f"{s['min_us']:.1f}"]
            if setup.baseline:
                bare = statistics.median(results.per_round(setup.name, setup.baseline, workload, ratio))
                cells += [f"{s['median_added_us']:+.1f}", f"{bare:.2f}x"]
            else:
                cells += ["-", "-"]
            ref = group.refs.get(setup.name)
            if ref and results.has(ref):
                cells += [ref, f"{total_ratio(results, setup.name, ref, workload):.2f}x",
                          f"{added_ratio(results, setup.name, ref, workload):.2f}x"]
            else:
                cells += ["-", "-", "-"]
            rows.append(tuple(cells))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [_format_row(row, widths) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _format_row(row: tuple[str, ...], widths: list[int]) -> str:
    """Names (setup, workload, ref) left-aligned, numbers right-aligned."""
    cells = [cell.ljust(width) if i in (0, 1, 6) else cell.rjust(width)
             for i, (cell, width) in enumerate(zip(row, widths, strict=True))]
    return "  ".join(cells).rstrip()


def format_verdicts(found: list[Verdict]) -> str:
    lines = []
    width = max((len(v.label) for v in found), default=0)
    for v in found:
        added = (f"added µs {v.added:.2f}x: {v.row_added:+.1f} vs {v.ref_added:+.1f} µs"
                 + (", judged on added µs" if v.on_added else ""))
        if v.limit is None:
            lines.append(f"  {v.label:<{width}}  {v.value:5.2f}x (shown, not judged)      ({added})")
        else:
            status = "MET" if v.met else "NOT MET"
            lines.append(f"  {v.label:<{width}}  {v.value:5.2f}x {v.relation:>2} {v.limit:.2f}x  {status:<7}  "
                         f"({added})")
    return "\n".join(lines)


# -- running -------------------------------------------------------------------------------------------------


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    """A redis-server of our own on a free loopback port, stopped by pid whatever happens."""
    server = RedisServer()
    previous = signal.signal(signal.SIGTERM, exit_on_sigterm)  # so a kill still runs the finally below
    try:
        server.start()
        yield server
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = bench_parser(__doc__.splitlines()[0], rounds=10, requests=500, profiles=PROFILE_TARGETS, top=15,
                          rounds_help="interleaved rounds per group",
                          profile_help="instead of benchmarking, cProfile this sessionkit setup's read and write "
                                       "workloads")
    parser.add_argument("--group", choices=("asgi", "flask", "cookie"), default=None,
                        help="measure only this group (default: all three)")
    return parse_bench_args(parser, argv)


def write_json(path: Path, groups: list[Group], found: list[Verdict], config: dict[str, Any],
               notes: list[str]) -> None:
    document: dict[str, Any] = {"config": config, "unit": "microseconds per request", "notes": notes, "groups": {}}
    for group in groups:
        results = group.results
        assert results is not None
        names = [s.name for s in results.setups]
        document["groups"][group.key] = {
            "title": group.title,
            "baselines": {s.name: s.baseline for s in results.setups},
            "refs": group.refs,
            "orders": results.orders,
            "samples": results.samples,
            "added_us": {s: {w: results.added(s, w) for w in WORKLOADS} for s in names if results.baseline(s)},
            "summary": {s: {w: results.summary(s, w) for w in WORKLOADS} for s in names},
        }
    document["verdicts"] = [
        {"group": v.group, "comparison": v.label, "judged_on": "added_us" if v.on_added else "total_us",
         "median_judged_ratio": v.value, "median_added_ratio": v.added,
         "row_added_us": v.row_added, "ref_added_us": v.ref_added, "limit": v.limit,
         "relation": v.relation if v.limit is not None else None, "met": v.met} for v in found]
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed
    rng = random.Random(seed)
    started = time.monotonic()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    built: list[Setup] = []
    notes: list[str] = []
    try:
        with running_redis() as server:
            env = Environment(server.url, server.host, server.port, "", "", 0, notes)
            try:
                only = PROFILE_TARGETS[args.profile][0] if args.profile else args.group
                groups, built = build_groups(env, only)
                if args.profile:
                    profile(groups[0].setups, PROFILE_TARGETS[args.profile][1], args.requests, args.top, loop)
                    return 0
                for group in groups:  # one interleaved run per group, each warmed up right before it
                    setups = warm_up(group.setups, args.requests, loop, group.notes)
                    group.results = measure(setups, args.rounds, args.requests, rng, loop)
            finally:
                close_setups(built, loop)
    finally:
        loop.close()
    elapsed = time.monotonic() - started
    config = {"rounds": args.rounds, "requests": args.requests, "seed": seed, "python": platform.python_version(),
              "platform": platform.platform(), "run_seconds": round(elapsed, 1)}
    print(f"sessionkit in Starlette and Flask vs their own and peer session layers: {args.rounds} interleaved "
          f"rounds x {args.requests} requests per workload, per group (seed {seed}, Python {config['python']})\n")
    print("µs/req and min µs: per request, median and minimum over rounds. added µs: over the row's own bare app,\n"
          "per round, median. x bare / x ref: total µs over the bare app's / the ref row's, per round, median.\n"
          "added x ref: added µs over the ref row's added µs, per round, median.")
    found: list[Verdict] = []
    for group in groups:
        assert group.results is not None
        verdicts = compare(group)
        found += verdicts
        for setup in group.results.setups:
            if setup.read_sets_cookie:
                group.notes.append(f"{setup.name} sent Set-Cookie on reads (sessionkit does not, and "
                                   "the checks enforce that)")
        print(f"\n{group.title}\n")
        print(format_table(group))
        print("\ncomparisons (total µs ratio, or added µs where a line says so; median of per-round ratios):")
        print(format_verdicts(verdicts))
        if group.notes:
            print("notes:")
            print("\n".join(f"  - {note}" for note in group.notes))
        notes += group.notes
    judged = [v for v in found if v.limit is not None]
    print("\nverdicts:")
    for v in judged:
        margin = v.margin
        close = "  (within 10% of the limit: rerun before acting)" if margin is not None and abs(margin) < 0.10 else ""
        basis = f"{v.row_added:+.1f} vs {v.ref_added:+.1f} µs" if v.on_added else f"added µs {v.added:.2f}x"
        print(f"  {'MET    ' if v.met else 'NOT MET'}  {v.label}: {v.value:.2f}x {v.relation} {v.limit:.2f}x "
              f"({basis}){close}")
    print(f"\nrun time: {elapsed:.0f} s")
    if args.json:
        write_json(args.json, groups, found, config, notes)
        print(f"raw numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
