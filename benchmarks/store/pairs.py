"""The connect codec against the native one on redis, in adjacent pairs: wall time, A/B, same moment.

``python -m benchmarks.store`` interleaves thirty-odd rows in shuffled rounds, so
the two sides of one ratio can run seconds apart, and on a shared machine one
round's ratio lands anywhere between 0.5 and 2. Here only the two rows of a
verdict alternate, one short batch each (the order flips every pair), so each
pair's ratio compares two moments a few milliseconds apart. Each batch is the
store benchmark's own job (`harness.run_job`: a fresh browser, the result
checked), and the ratio is taken on the server's µs: the batch's time less
the time its browser spent on ``Set-Cookie`` (the client's work). The median
over pairs is judged against ``verdicts.CONNECT_LIMIT``; the quartiles and the
ratio with the browser's time included are shown with it.

    .venv/bin/python -m benchmarks.store.pairs [--pairs 60] [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys

from .harness import close_setups, run_job, running_servers, warm_up
from .setups import SK_CONNECT_ASYNC, SK_CONNECT_SYNC, SK_REDIS_ASYNC, SK_REDIS_SYNC, Environment, sessionkit_setups
from .verdicts import CONNECT_LIMIT

__all__ = ["main"]

_PAIRS = ((SK_CONNECT_SYNC, SK_REDIS_SYNC), (SK_CONNECT_ASYNC, SK_REDIS_ASYNC))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=60)
    parser.add_argument("--requests", type=int, default=200, help="requests per batch")
    args = parser.parse_args(argv)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    met = True
    try:
        with running_servers() as (redis_server, memcached):
            env = Environment(redis_server.url, redis_server.host, redis_server.port,
                              memcached.url, memcached.host, memcached.port)
            built = sessionkit_setups(env)
            try:
                setups = {s.name: s for s in warm_up([s for s in built if s.name in sum(_PAIRS, ())],
                                                     args.requests, loop, env.notes)}
                print(f"connect / native, {args.pairs} adjacent pairs of {args.requests} requests each; "
                      f"ratios of server µs (the browser's Set-Cookie time taken out), limit {CONNECT_LIMIT}x")
                for connect, native in _PAIRS:
                    for workload in ("read", "write"):
                        server: list[float] = []
                        total: list[float] = []
                        extra: list[float] = []
                        for index in range(args.pairs):
                            order = (connect, native) if index % 2 == 0 else (native, connect)
                            runs = {name: run_job(setups[name], workload, args.requests, loop) for name in order}
                            (a, a_client), (b, b_client) = runs[connect], runs[native]
                            server.append((a - a_client) / (b - b_client))
                            total.append(a / b)
                            extra.append((a - a_client) - (b - b_client))
                        q1, median, q3 = statistics.quantiles(server, n=4)
                        ok = median <= CONNECT_LIMIT
                        met = met and ok
                        print(f"  {connect} / {native}, {workload}: {median:.3f}x (quartiles {q1:.3f}-{q3:.3f}, "
                              f"{statistics.median(extra):+.1f} µs) {'MET' if ok else 'NOT MET'}; "
                              f"with the browser's part {statistics.median(total):.3f}x")
            finally:
                close_setups(built, loop)
    finally:
        loop.close()
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
