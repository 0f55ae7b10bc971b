"""Run a framework's own session tests with sessionkit swapped in.

Usage: ``python -m compat.run flask [--store memory|redis|all] [pytest args...]``
(``scripts/framework-compat flask`` and ``tox -e compat-flask31`` call it).

The framework's tests come from its sdist, for the version installed here, which
must be the newest line ``tox.ini`` tests against: ``pip download`` fetches it
once into ``.compat-cache/`` (gitignored) and the tests are extracted next to
it. Each store runs the tests in a fresh pytest process with our plugin; the
redis run gets a redis-server of its own (`testservers`). The exit status is
pytest's worst: any failure not listed in the expected ones, or any listed test
that passes, fails the run.
"""

from __future__ import annotations

import argparse
import configparser
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import Version

__all__ = ["FRAMEWORKS", "Framework", "main"]

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".compat-cache"
STORES = ("memory", "redis")


@dataclass(frozen=True)
class Framework:
    """Where a framework's session tests are and which plugin swaps sessionkit in."""

    #: The distribution name on PyPI and the tox factor prefix (``flask31``).
    name: str
    #: Test files, relative to the sdist's root.
    tests: tuple[str, ...]
    #: pytest ``-k`` expression selecting the session tests in them.
    keyword: str
    plugin: str
    #: What to extract from the sdist besides the tests (its pytest configuration).
    extra_files: tuple[str, ...] = ("pyproject.toml",)


FRAMEWORKS = {
    "flask": Framework("flask", ("tests/test_basic.py", "tests/test_session_interface.py"), "session",
                       "compat.flask_plugin"),
}


def newest_spec(framework: str, tox_ini: Path = ROOT / "tox.ini") -> SpecifierSet:
    """The version range of the newest ``<framework>NN:`` factor in tox.ini's deps."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(tox_ini)
    pattern = re.compile(rf"^{re.escape(framework)}\d+:\s*{re.escape(framework)}\s*([^\s#]+)", re.IGNORECASE)
    specs = [SpecifierSet(match.group(1)) for line in parser.get("testenv", "deps").splitlines()
             if (match := pattern.match(line.strip()))]
    if not specs:
        raise SystemExit(f"tox.ini has no '{framework}NN: {framework}...' line in [testenv] deps")
    return max(specs, key=_lower_bound)


def _lower_bound(spec: SpecifierSet) -> Version:
    bounds = [Version(item.version) for item in spec if item.operator in (">=", "==", "~=")]
    return max(bounds, default=Version("0"))


def installed_version(framework: str) -> str:
    """The installed version, which must fall in the newest tox.ini line (the tests must match it)."""
    spec = newest_spec(framework)
    installed = version(framework)
    if installed not in spec:
        raise SystemExit(f"{framework} {installed} is installed, but the newest line tox.ini tests is {spec}: "
                         f"run this in its environment (tox -e compat-{framework}...) or install it")
    return installed


def fetch_tests(framework: Framework, release: str) -> Path:
    """The framework's sdist for `release`, downloaded once, with its tests extracted; returns their root."""
    CACHE.mkdir(exist_ok=True)
    (CACHE / ".gitignore").write_text("*\n")
    target = CACHE / f"{framework.name}-{release}"
    if (target / framework.tests[0]).is_file():
        return target
    sdist = _find_sdist(framework.name, release)
    if sdist is None:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",  # noqa: S603 - our own argv
                        "--disable-pip-version-check", "--dest", str(CACHE), f"{framework.name}=={release}"],
                       check=True)
        sdist = _find_sdist(framework.name, release)
        if sdist is None:
            raise SystemExit(f"pip download gave no sdist for {framework.name}=={release} in {CACHE}")
    wanted = ("tests/", *framework.extra_files)
    with tarfile.open(sdist) as archive:
        members = []
        for member in archive.getmembers():
            _, _, inner = member.name.partition("/")
            if inner.startswith(wanted) and (member.isfile() or member.isdir()):
                member.name = inner
                members.append(member)
        # The "data" filter (Python 3.12, backported to 3.10.12/3.11.4) refuses links and absolute paths.
        if hasattr(tarfile, "data_filter"):
            archive.extractall(target, members=members, filter="data")
        else:  # pragma: no cover - older patch releases
            archive.extractall(target, members=members)  # noqa: S202 - members are checked files under tests/
    return target


def _find_sdist(name: str, release: str) -> Path | None:
    wanted = f"{name}-{release}.tar.gz".lower()
    return next((path for path in CACHE.glob("*.tar.gz") if path.name.lower() == wanted), None)


PREFIX = "compat:"


@contextmanager
def store_url(store: str) -> Iterator[tuple[str, Callable[[], int] | None]]:
    """``memory://``, or a redis-server of our own for the run's length; and a count of stored sessions."""
    if store == "memory":
        yield "memory://", None
        return
    sys.path.insert(0, str(ROOT))
    import redis

    from testservers import RedisServer

    server = RedisServer()
    server.start()
    client = redis.Redis.from_url(server.url)
    try:
        yield f"{server.url}?prefix={PREFIX}", lambda: len(client.keys(PREFIX + "*"))
    finally:
        client.close()
        server.stop()


def run_store(framework: Framework, tests: Path, store: str, pytest_args: Sequence[str]) -> int:
    with store_url(store) as (url, stored):
        print(f"==> {framework.name}'s own session tests, sessionkit on {url}", flush=True)
        command = [sys.executable, "-m", "pytest", "-p", framework.plugin, "-p", "no:cacheprovider",
                   "--rootdir", str(tests), "-c", str(tests / "pyproject.toml"), "-rxXf",
                   *framework.tests, "-k", framework.keyword, *pytest_args]
        env = {**_environ(), "SESSIONKIT_COMPAT_URL": url}
        code = subprocess.run(command, cwd=tests, env=env, check=False).returncode  # noqa: S603 - our own argv
        if stored is not None:
            # Proof the sessions went to this server, not to some default store.
            count = stored()
            print(f"==> {count} session(s) left in the server under {PREFIX!r}")
            if code == 0 and count == 0:
                print("==> no session reached the server: the swap did not take effect", file=sys.stderr)
                code = 1
        return code


def _environ() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compat.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("framework", choices=sorted(FRAMEWORKS))
    parser.add_argument("--store", choices=(*STORES, "all"), default="all")
    args, pytest_args = parser.parse_known_args(argv)
    framework = FRAMEWORKS[args.framework]
    release = installed_version(framework.name)
    tests = fetch_tests(framework, release)
    results = {}
    for store in STORES if args.store == "all" else (args.store,):
        results[store] = run_store(framework, tests, store, pytest_args)
    summary = ", ".join(f"{store}: {'ok' if code == 0 else f'FAILED ({code})'}" for store, code in results.items())
    print(f"==> {framework.name} {release}: {summary}")
    return max(results.values())


if __name__ == "__main__":
    sys.exit(main())
