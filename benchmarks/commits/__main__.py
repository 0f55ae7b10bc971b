"""This checkout's per-request cost against an older commit's, on memory://, redis:// and cookie://.

    python -m benchmarks.commits [--before ae94b71] [--rounds 12] [--requests 1500] [--callgrind]

The older commit is checked out into a temporary git worktree; each tree is
measured by `worker.py` in its own process (``PYTHONPATH`` = the tree), through
`SessionManager` and the WSGI middleware only, on one real redis-server this
run starts. Every round runs both trees, in a shuffled order, and each row is
the request's time minus a bare app's, measured moments before in the same
process; the verdict is the median over rounds of each round's after/before
ratio, so the machine's swings in speed cancel out.

``--callgrind`` adds instruction counts (valgrind's callgrind, counted only
between two markers around N requests in one process, with hash seed and
address layout fixed): repeatable to about 0.1 %, where wall time on a shared
machine is not. Its ratios include the harness's own work (a bare app's
request), which both trees share.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from testservers import RedisServer

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("worker.py")
ROWS = ("memory read", "memory write", "redis read", "redis write", "cookie read", "cookie write")


def worktree(commit: str, where: Path) -> Path:
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(where), commit],
                   check=True, capture_output=True)
    return where


def run_worker(tree: Path, *args: str) -> str:
    out = subprocess.run([sys.executable, str(WORKER), *args], cwd=tempfile.gettempdir(),
                         env={**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"},
                         capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{tree}: {out.stderr.strip()[-2000:]}")
    return out.stdout


def wall(trees: dict[str, Path], urls: dict[str, str], rounds: int, requests: int) -> dict[str, dict[str, list[float]]]:
    results: dict[str, dict[str, list[float]]] = {}
    for _ in range(rounds):
        order = list(trees)
        random.shuffle(order)
        for name in order:
            for row, added in json.loads(run_worker(trees[name], "times", json.dumps(urls), str(requests))).items():
                results.setdefault(row, {}).setdefault(name, []).append(added)
    return results


def instructions(tree: Path, url: str, op: str, requests: int) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "cg.out"
        subprocess.run(["setarch", "-R", "valgrind", "--tool=callgrind", "--dump-before=time_sleep",
                        f"--callgrind-out-file={out}", sys.executable, str(WORKER), "segment", url, op,
                        str(requests)],
                       cwd=scratch, env={**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"},
                       check=True, capture_output=True)
        dumps = sorted(Path(scratch).glob("cg.out.*"), key=lambda path: int(path.name.rsplit(".", 1)[1]))
        for line in dumps[1].read_text().splitlines():  # the dump between the two markers
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1]) // requests
    raise SystemExit("callgrind wrote no totals")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.commits", description=__doc__.split("\n")[0])
    parser.add_argument("--before", default="ae94b71", help="the commit to compare with (default: ae94b71)")
    parser.add_argument("--rounds", type=int, default=12, help="wall-time rounds (0: instructions only)")
    parser.add_argument("--requests", type=int, default=1500)
    parser.add_argument("--callgrind", action="store_true", help="also count instructions (needs valgrind)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args(argv)
    if args.callgrind and not shutil.which("valgrind"):
        raise SystemExit("--callgrind needs valgrind (apt-get install valgrind)")
    scratch = Path(tempfile.mkdtemp(prefix="sessionkit-commits-"))
    server = RedisServer()
    server.start()
    try:
        trees = {"before": worktree(args.before, scratch / "before"), "after": ROOT}
        urls = {"memory": "memory://", "redis": server.url, "cookie": "cookie://"}
        report: dict[str, object] = {"before": args.before}
        results = wall(trees, urls, args.rounds, args.requests)
        rows = {}
        if args.rounds:
            print(f"wall time, {args.rounds} rounds x {args.requests} requests: µs added over a bare app (median)")
            print(f"{'row':<14} {'before':>8} {'after':>8} {'after/before':>13}   per-round ratios")
        for row in ROWS if args.rounds else ():
            before, after = results[row]["before"], results[row]["after"]
            ratios = [a / b for a, b in zip(after, before, strict=True)]
            rows[row] = {"before": statistics.median(before), "after": statistics.median(after),
                         "ratio": statistics.median(ratios)}
            print(f"{row:<14} {rows[row]['before']:>8.2f} {rows[row]['after']:>8.2f} {rows[row]['ratio']:>12.2f}x"
                  f"   {' '.join(f'{ratio:.2f}' for ratio in ratios)}")
        report["wall"] = rows
        if args.callgrind:
            counts = {}
            print("\ninstructions per request (callgrind, harness included)")
            print(f"{'row':<14} {'before':>9} {'after':>9} {'after/before':>13}")
            for row in ROWS:
                store, op = row.split()
                before_count = instructions(trees["before"], urls[store], op, 1000)
                after_count = instructions(trees["after"], urls[store], op, 1000)
                counts[row] = {"before": before_count, "after": after_count, "ratio": after_count / before_count}
                print(f"{row:<14} {before_count:>9,} {after_count:>9,} {after_count / before_count:>12.3f}x")
            report["instructions"] = counts
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
    finally:
        server.stop()
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(scratch / "before")],
                       capture_output=True)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
