"""The ``sessionkit`` command line: operator tasks that sit next to the library.

Each subcommand registers its arguments and a handler taking the parsed
arguments and the environment and returning an exit code (``keygen`` here, the
store commands in `sessionkit.ops.commands`); `main` parses, dispatches and
turns errors into one line on stderr, never a traceback. Exit codes:

- 0 success;
- 1 the store failed or is unreachable, or another sessionkit failure;
- 2 a usage or configuration error (argparse's own code for bad arguments):
  a malformed URL, an unknown command, ``memory://``;
- 3 the session named is not in the store;
- 4 a cookie value did not verify (forged, truncated, or an unlisted key).
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from . import __version__
from .config import MIN_KEY_BYTES, parse_secret_keys, split_secret_keys
from .errors import ConfigError, SessionKitError
from .ops.commands import EXIT_FORGED, EXIT_NOT_FOUND, NotFound, Rejected, add_store_commands
from .record import CorruptRecord

__all__ = ["KEYS_ENV", "build_parser", "main", "new_key"]

#: The variable `SessionManager.from_env` reads: comma-separated keys, newest first.
KEYS_ENV = "SESSIONKIT_SECRET_KEYS"

Handler = Callable[[argparse.Namespace, Mapping[str, str]], int]


class UsageError(SessionKitError):
    """A command was asked for something it cannot do; the message says what to do instead."""


def new_key(nbytes: int = MIN_KEY_BYTES) -> str:
    """`nbytes` random bytes as unpadded base64url: no commas, so it fits `SESSIONKIT_SECRET_KEYS`."""
    if nbytes < MIN_KEY_BYTES:
        raise ConfigError(f"keys need at least {MIN_KEY_BYTES} random bytes, not {nbytes}", option="bytes")
    return secrets.token_urlsafe(nbytes)


def _int_at_least(minimum: int, why: str = "") -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is too small: the minimum is {minimum}{why}")
        return value

    return parse


# -- keygen ---------------------------------------------------------------------


def _add_keygen(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser(
        "keygen",
        help="print a new secret key (or the rotated SESSIONKIT_SECRET_KEYS value)",
        description=(
            f"Print a new secret key: {MIN_KEY_BYTES} random bytes from the OS (secrets), as URL-safe "
            "base64 without padding, so it never contains a comma. With --rotate, print the new "
            f"{KEYS_ENV} value instead: the new key first, then the current keys from the environment. "
            "Deploying that value directly logs out users while services are redeployed; "
            "docs/key-rotation.md gives the safe, phased procedure."
        ),
    )
    parser.add_argument(
        "--bytes", type=_int_at_least(MIN_KEY_BYTES, " (HMAC-SHA256 keys need 32+ random bytes)"),
        default=MIN_KEY_BYTES, metavar="N", help=f"random bytes per key (default and minimum: {MIN_KEY_BYTES})",
    )
    parser.add_argument("--count", type=_int_at_least(1), default=1, metavar="N",
                        help="print N keys, one per line (default: 1)")
    parser.add_argument("--rotate", action="store_true",
                        help=f"print a new key followed by the current keys from ${KEYS_ENV}, comma-separated")
    parser.add_argument("--keep", type=_int_at_least(0), default=None, metavar="N",
                        help="with --rotate: keep at most N of the current keys, newest first (default: all)")
    parser.set_defaults(handler=_keygen)


def _keygen(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if not args.rotate:
        if args.keep is not None:
            raise UsageError("--keep only applies with --rotate")
        for _ in range(args.count):
            print(new_key(args.bytes))
        return 0
    if args.count != 1:
        raise UsageError("--rotate prints one value: drop --count")
    current = split_secret_keys(environ.get(KEYS_ENV, ""))
    if not current:
        raise UsageError(
            f"{KEYS_ENV} is not set or empty: --rotate adds a key to the current ones, so run it where "
            f"{KEYS_ENV} holds the keys your services use (comma-separated, newest first), "
            "or use plain 'sessionkit keygen' for a first key"
        )
    kept = current if args.keep is None else current[: args.keep]
    for position, key in enumerate(kept, 1):
        # Print nothing that every service would refuse at start-up.
        if len(key.encode("utf-8")) < MIN_KEY_BYTES:
            raise UsageError(
                f"key {position} in {KEYS_ENV} is {len(key.encode('utf-8'))} bytes and services refuse keys "
                f"under {MIN_KEY_BYTES}: fix the variable, or drop that key with --keep {position - 1}"
            )
    keys = [new_key(args.bytes), *kept]
    parse_secret_keys(keys)  # and the library's own rules, should they ever grow beyond length
    print(",".join(keys))
    return 0


# -- the driver -----------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line (its usage block would bury the message)."""

    def error(self, message: str) -> NoReturn:
        if message.startswith("unrecognized arguments:"):
            # Never echo them: one may be a session id or cookie value starting with '-'.
            count = len(message.split()) - 2
            message = (f"{count} unrecognized argument(s); a session id or cookie value that starts with '-' "
                       "goes after '--'")
        elif message.startswith("the following arguments are required") and ("ID_OR_COOKIE" in message
                                                                              or "VALUE" in message):
            message += " (one that starts with '-' goes after '--')"
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="sessionkit", description="Operator tools for sessionkit, the shared session library.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_store_commands(commands)
    _add_keygen(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code instead of exiting, so tests and wrappers can call it."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed usage and the error, or --help/--version
        return exc.code if isinstance(exc.code, int) else 2
    handler: Handler = args.handler
    try:
        return handler(args, os.environ)
    except NotFound as exc:
        print(f"sessionkit {args.command}: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except Rejected as exc:
        print(f"sessionkit {args.command}: {exc}", file=sys.stderr)
        return EXIT_FORGED
    except (UsageError, ConfigError) as exc:
        print(f"sessionkit {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except SessionKitError as exc:
        print(f"sessionkit {args.command}: {exc}", file=sys.stderr)
        return 1
    except CorruptRecord as exc:
        print(f"sessionkit {args.command}: the stored session is unreadable: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"sessionkit {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # `sessionkit keygen --count 100 | head -1`: the reader left; say nothing more.
        # Point stdout at devnull so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
