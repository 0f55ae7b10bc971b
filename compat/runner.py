"""Run a framework's own session tests with sessionkit swapped in.

Usage: ``python -m compat.runner FRAMEWORK [--store NAME]... [-- PYTEST_ARGS]``
(``scripts/framework-compat`` runs it in a venv of its own per framework,
``tox -e compat-FRAMEWORK`` in its env).

Generic: what differs per framework is the ``SPEC`` (a `compat.spec.CompatSpec`)
of ``compat/FRAMEWORK_plugin.py``, which is also the pytest plugin that does the
swap; `compat.harness` marks the spec's expected failures. The runner

1. installs, where this interpreter lacks them, the newest version of the
   framework in tox.ini's matrix and the spec's test-time requirements;
2. downloads the sdist of the installed version from PyPI, once, into
   ``.compat-cache/`` (gitignored), and extracts only the spec's members: the
   tests run against the very code they were written for;
3. runs them with the framework's own pytest config, once per store; a server
   store (redis) is a real redis-server of the run's own, and a run on it that
   left no session in it fails (the swap did not take effect).

It exits non-zero if any run fails, including a listed expected failure that
passed or is no longer collected. A download that fails ends the run with one
line saying what to do.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

from .spec import SPEC_VARIABLE, URL_VARIABLE, CompatSpec

__all__ = ["CACHE", "main", "newest_in_matrix", "sdist"]

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".compat-cache"
#: Key prefix of the sessions a redis run stores, counted after the run.
PREFIX = "compat:"


def newest_in_matrix(package: str, tox_ini: Path = ROOT / "tox.ini") -> Requirement:
    """The requirement of tox.ini's matrix with the highest lower bound for `package`."""
    found: list[tuple[Version, Requirement]] = []
    for line in tox_ini.read_text().splitlines():
        match = re.match(r"\s*[\w.-]+:\s*(\S+)\s*$", line)
        if not match:
            continue
        try:
            requirement = Requirement(match[1])
        except ValueError:
            continue
        if requirement.name.lower() != package.lower():
            continue
        lows = [Version(spec.version) for spec in requirement.specifier if spec.operator in (">=", "==", "~=")]
        if lows:
            found.append((max(lows), requirement))
    if not found:
        raise SystemExit(f"tox.ini names no {package} version")
    return max(found, key=lambda pair: pair[0])[1]


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _pip(arguments: Sequence[str], what: str, cache: Path) -> None:
    """Run this interpreter's pip quietly; on failure, keep its output in a log and end with one line."""
    result = subprocess.run(  # noqa: S603 - this interpreter's pip, with the spec's and tox.ini's names
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *arguments],
        capture_output=True, text=True, check=False)
    if result.returncode != 0:
        cache.mkdir(parents=True, exist_ok=True)
        log = cache / "pip.log"
        log.write_text(result.stdout + result.stderr)
        raise SystemExit(f"framework-compat: pip could not {what} (its output: {log}); this needs access to PyPI "
                         "(or a PIP_INDEX_URL mirror): check the network and run again")


def ensure_installed(requirements: Sequence[Requirement], cache: Path = CACHE) -> None:
    """Install each of `requirements` this interpreter lacks, or has in a version outside it."""
    wanted = []
    for requirement in requirements:
        version = _installed(requirement.name)
        if version is None or not requirement.specifier.contains(version, prereleases=True):
            wanted.append(str(requirement))
    if wanted:
        print(f"==> pip install {' '.join(wanted)}", flush=True)
        _pip(["install", "-q", *wanted], f"install {' '.join(wanted)}", cache)


def sdist(package: str, version: str, cache: Path = CACHE) -> Path:
    """The sdist of `package` `version`, downloaded once into `cache`."""
    folder = cache / "sdists"
    wanted = f"{package}-{version}.tar.gz".lower().replace("_", "-")
    for candidate in folder.glob("*.tar.gz"):
        if candidate.name.lower().replace("_", "-") == wanted:
            return candidate
    print(f"==> pip download {package}=={version} (sdist)", flush=True)
    # --no-binary for the package alone: with :all:, pip would build the sdist's build backend
    # (hatchling and its dependencies) from sources too, to read its metadata (minutes, not seconds).
    _pip(["download", "-q", "--no-deps", "--no-binary", package, "-d", str(folder), f"{package}=={version}"],
         f"download the sdist of {package}=={version}", cache)
    for candidate in folder.glob("*.tar.gz"):
        if candidate.name.lower().replace("_", "-") == wanted:
            return candidate
    raise SystemExit(f"framework-compat: pip download left no {wanted} in {folder}")


def extract(archive: Path, members: Sequence[str], dest: Path) -> Path:
    """Only `members` of the sdist, written afresh under `dest` (nothing else of the archive is trusted or kept)."""
    shutil.rmtree(dest, ignore_errors=True)
    with tarfile.open(archive) as tar:
        top = tar.getnames()[0].split("/")[0]
        for member in members:
            try:
                source = tar.extractfile(f"{top}/{member}")
            except KeyError:
                source = None
            if source is None:
                raise SystemExit(f"framework-compat: {archive.name} has no file {member}")
            target = dest / member
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read())
    return dest


@contextmanager
def store_url(store: str) -> Iterator[tuple[str, Callable[[], int] | None]]:
    """A URL for `store`, and for a server store a count of the sessions in it (a fresh server of the run's own)."""
    if store in ("memory", "cookie"):
        yield f"{store}://", None
        return
    if store != "redis":
        raise SystemExit(f"unknown store {store!r} (memory, cookie, redis)")
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


def run(spec: CompatSpec, tree: Path, store: str, pytest_args: Sequence[str]) -> int:
    """pytest on the spec's targets, in a process of its own, with sessionkit on `store`; its exit status."""
    with store_url(store) as (url, stored):
        env = {**os.environ, URL_VARIABLE: url, SPEC_VARIABLE: spec.plugin,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
        command = [sys.executable, "-m", "pytest", "-c", spec.config, "--rootdir", ".", "-p", "no:cacheprovider",
                   "-p", "compat.harness", "-p", spec.plugin, "-rfEX", *spec.targets, *pytest_args]
        print(f"==> {spec.package} on {url}: pytest {' '.join(command[3:])}", flush=True)
        code = subprocess.run(command, cwd=tree, env=env, check=False).returncode  # noqa: S603 - pytest, our arguments
        if stored is not None:
            count = stored()
            print(f"==> {count} session(s) in the server under {PREFIX!r}", flush=True)
            if code == 0 and count == 0:
                print("==> no session reached the server: the swap did not take effect", file=sys.stderr)
                code = 1
        return code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="compat.runner", description="Run a framework's own session tests "
                                     "with sessionkit swapped in; arguments after -- go to pytest.")
    parser.add_argument("framework", help="a module compat/FRAMEWORK_plugin.py with a SPEC")
    parser.add_argument("--store", action="append", choices=("memory", "cookie", "redis"),
                        help="a store to run on, repeatable (default: the spec's stores)")
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    spec: CompatSpec = importlib.import_module(f"compat.{args.framework}_plugin").SPEC
    framework = newest_in_matrix(spec.package)
    ensure_installed([framework, *map(Requirement, spec.requirements)])
    version = importlib.metadata.version(spec.package)
    pytest_version = importlib.metadata.version("pytest")
    print(f"==> {spec.package} {version} (tox.ini's newest: {framework}), pytest {pytest_version}", flush=True)
    tree = extract(sdist(spec.package, version), spec.members, CACHE / f"{spec.package}-{version}")
    results = {store: run(spec, tree, store, pytest_args) for store in args.store or spec.stores}
    summary = ", ".join(f"{store}: {'ok' if code == 0 else f'FAILED ({code})'}" for store, code in results.items())
    print(f"==> {spec.package} {version}: {summary}", flush=True)
    return 0 if all(code == 0 for code in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
