"""``python examples/shared-login`` (or ``scripts/shared-login``): run the whole deployment until Ctrl-C.

Starts Redis (unless ``--redis-url`` names one), the auth, app and Express
services and nginx in front of them, prints the URL and the curl lines to try,
and stops everything on Ctrl-C or SIGTERM, or as soon as any piece dies.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import NoReturn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout: testservers, and sessionkit

from stack import AUTH_PATHS, EXPRESS_PREFIX, SharedLogin

__all__ = ["banner", "main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/shared-login",
        description="Flask, FastAPI and Express services sharing one login through Redis, behind nginx.")
    parser.add_argument("--port", type=int, default=8080, help="nginx's port on 127.0.0.1 (default 8080; 0: any free)")
    parser.add_argument("--apps", type=int, default=2, help="app service instances behind nginx (default 2)")
    parser.add_argument("--affinity", action="store_true",
                        help="pin each session to one app instance (nginx: hash $session_id consistent)")
    parser.add_argument("--redis-url", help="use this Redis instead of starting one (e.g. redis://127.0.0.1:6379/0)")
    return parser


def banner(deployment: SharedLogin) -> str:
    url = deployment.url
    apps = ", ".join(f"{app.name} :{app.port}" for app in deployment.apps)
    return f"""
sessionkit shared login: one cookie, one session, three services, one domain
  {url}
    {" ".join(AUTH_PATHS):<30} auth     Flask on gunicorn       :{deployment.auth.port}
    {EXPRESS_PREFIX + "…":<30} express  Express on node         :{deployment.express.port}
    {"everything else":<30} app      FastAPI on uvicorn      {apps}{" (affinity)" if deployment.affinity else ""}
  sessions: {deployment.redis_url} (keys sess:<id>), cookie connect.sid

  curl -c jar -b jar '{url}/node/login?user=alice'    # log in on Node
  curl -c jar -b jar {url}/increment                  # change the session in Python (Flask)
  curl -b jar {url}/                                  # read it in Python (FastAPI)
  curl -b jar {url}/node/                             # and in Node
  curl -c jar -b jar {url}/logout                     # log out: every service sees it
  curl -b jar {url}/                                  # 403 again

Ctrl-C stops everything.
"""


def _interrupt(signum: int, frame: FrameType | None) -> NoReturn:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.apps < 1:
        print("shared-login: --apps must be at least 1", file=sys.stderr)
        return 2
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    deployment = SharedLogin(apps=args.apps, affinity=args.affinity, redis_url=args.redis_url,
                             port=args.port or None)
    try:
        print("shared-login: starting Redis, the services and nginx …", flush=True)
        try:
            deployment.start()
        except RuntimeError as exc:
            print(f"shared-login: {exc}", file=sys.stderr)
            return 1
        print(banner(deployment), flush=True)
        while True:
            for server in (deployment.nginx, *deployment.services):
                if not server.running():
                    print(f"shared-login: {server.name} stopped; its log:\n{server.log_tail()}", file=sys.stderr)
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave children behind
        deployment.stop()
        print("shared-login: stopped", flush=True)


if __name__ == "__main__":
    sys.exit(main())
