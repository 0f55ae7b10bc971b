"""sessionkit on real redis and memcached: against the raw-client floor and against peer libraries.

Run: ``python -m benchmarks.store [--rounds 10] [--requests 500] [--json PATH] [--seed N]``;
``--profile redis-sync`` (or redis-async, memcache-sync, memcache-async)
instead cProfiles that sessionkit setup. The package docstring says what each
module does; benchmarks/README.md how to read the output.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import sys
import time

from ..wsgi_bench import WARMUP_REQUESTS, bench_parser, parse_bench_args
from .counting import probe_all
from .harness import Setup, close_setups, measure, profile, run_job, running_servers, warm_up
from .setups import (
    SK_CONNECT_ASYNC,
    SK_CONNECT_SYNC,
    SK_MC_ASYNC,
    SK_MC_SYNC,
    SK_REDIS_ASYNC,
    SK_REDIS_SYNC,
    Environment,
    bare_setups,
    floor_setups,
    peer_setups,
    round_trip_setups,
    sessionkit_setups,
)
from .verdicts import format_premise, format_round_trips, format_table, format_verdicts, verdicts, write_json

__all__ = ["PROFILE_TARGETS", "main", "parse_args"]

PROFILE_TARGETS = {"redis-sync": SK_REDIS_SYNC, "redis-async": SK_REDIS_ASYNC,
                   "connect-sync": SK_CONNECT_SYNC, "connect-async": SK_CONNECT_ASYNC,
                   "memcache-sync": SK_MC_SYNC, "memcache-async": SK_MC_ASYNC}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = bench_parser(__doc__.splitlines()[0], rounds=10, requests=500, profiles=PROFILE_TARGETS, top=15,
                          profile_help="instead of benchmarking, cProfile this sessionkit setup's workloads")
    return parse_bench_args(parser, argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    seed = args.seed
    started = time.monotonic()
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    built: list[Setup] = []
    try:
        with running_servers() as (redis_server, memcached):
            env = Environment(redis_server.url, redis_server.host, redis_server.port,
                              memcached.url, memcached.host, memcached.port)
            try:
                built = [*bare_setups(), *sessionkit_setups(env), *floor_setups(env), *round_trip_setups(env),
                         *peer_setups(env)]
                if args.profile:
                    profile(built, PROFILE_TARGETS[args.profile], args.requests, args.top, loop)
                    return 0
                setups = warm_up(built, args.requests, loop, env.notes)
                probes = probe_all(setups, env, loop)
                for setup in setups:  # the floor may have switched plans: warm that path too
                    if setup.name.startswith("floor pymemcache"):
                        run_job(setup, "read", min(WARMUP_REQUESTS, args.requests), loop)
                results = measure(setups, args.rounds, args.requests, random.Random(seed), loop)
            finally:
                close_setups(built, loop)
    finally:
        loop.close()
    elapsed = time.monotonic() - started
    config = {"rounds": args.rounds, "requests": args.requests, "seed": seed, "python": platform.python_version(),
              "platform": platform.platform(), "run_seconds": round(elapsed, 1)}
    for setup in setups:
        if setup.read_sets_cookie:
            env.notes.append(f"{setup.name} sends Set-Cookie on every read (sessionkit and the floors do not)")
    found, missing = verdicts(results)
    print(f"sessionkit on redis and memcached vs raw-client floors and peers: {args.rounds} interleaved rounds x "
          f"{args.requests} requests per workload (seed {seed}, Python {config['python']})\n")
    print("µs per request (median over rounds); +µs = added over the 'vs' bare app, per round, median;\n"
          "RT = round trips per request and cmds = commands per request (with those scripts run), as the server\n"
          "counted them\n")
    print(format_table(results, probes))
    print()
    print(format_round_trips(setups, probes))
    print(format_premise(setups, probes))
    print()
    print(format_verdicts(found, missing, results))
    if env.notes:
        print("\nnotes:")
        print("\n".join(f"  - {note}" for note in env.notes))
    print(f"\nrun time: {elapsed:.0f} s")
    if args.json:
        write_json(args.json, results, probes, found, config, env.notes)
        print(f"raw numbers written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
