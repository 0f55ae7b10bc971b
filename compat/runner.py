"""Run a framework's own session tests with sessionkit swapped in.

Usage: ``python -m compat.runner FRAMEWORK [--store NAME]... [-- PYTEST_ARGS]``

Generic: everything framework-specific is the ``SPEC`` (a `CompatSpec`) of
``compat/FRAMEWORK_plugin.py``, which is also the pytest plugin that does the
swap. The runner

1. finds the newest version of the framework in tox.ini's matrix and installs
   it (with the test-only packages the spec names) if the interpreter lacks it
   (``scripts/framework-compat`` runs it in a venv of its own, tox in its env:
   those packages change the framework's behaviour for other tests);
2. downloads the sdist of the installed version from PyPI, once, into
   ``.compat-cache/`` (gitignored), and extracts only the spec's members: the
   tests run against the very code they were written for;
3. runs them with the framework's own pytest config, once per store; a server
   store (redis) is a real redis-server started by `testservers`.

It exits non-zero if any run fails, including a listed expected failure that
passed: the plugin marks those strict.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import os
import re
import subprocess
import sys
import tarfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.version import Version

__all__ = ["main", "newest_in_matrix"]

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".compat-cache"


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


def ensure_installed(requirement: Requirement, extras: Sequence[str]) -> str:
    """Install `requirement` and `extras` into this interpreter where missing; the framework's installed version."""
    wanted = []
    version = _installed(requirement.name)
    if version is None or not requirement.specifier.contains(version, prereleases=True):
        wanted.append(str(requirement))
    wanted += [extra for extra in extras if _installed(Requirement(extra).name) is None]
    if wanted:
        print(f"==> pip install {' '.join(wanted)}", flush=True)
        subprocess.run(  # noqa: S603 - this interpreter's pip, with the spec's and tox.ini's names
            [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", *wanted], check=True)
    installed = _installed(requirement.name)
    assert installed is not None
    return installed


def sdist(package: str, version: str) -> Path:
    """The sdist of `package` `version`, downloaded once into the cache."""
    folder = CACHE / "sdists"
    for candidate in folder.glob("*.tar.gz"):
        if candidate.name.lower().replace("_", "-") == f"{package}-{version}.tar.gz".lower():
            return candidate
    folder.mkdir(parents=True, exist_ok=True)
    print(f"==> pip download {package}=={version} (sdist)", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "download",  # noqa: S603 - a pinned name==version "-q", "--disable-pip-version-check", "--no-deps",
                    "--no-binary", ":all:", f"{package}=={version}", "-d", str(folder)],
                   check=True)
    return sdist(package, version)


def extract(archive: Path, members: Sequence[str], dest: Path) -> Path:
    """Only `members` of the sdist, written under `dest` (nothing else of the archive is trusted or kept)."""
    with tarfile.open(archive) as tar:
        top = tar.getnames()[0].split("/")[0]
        for member in members:
            source = tar.extractfile(f"{top}/{member}")
            if source is None:
                raise SystemExit(f"{archive.name} has no {member}")
            target = dest / member
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read())
    return dest


@contextmanager
def store_url(store: str) -> Iterator[str]:
    """A URL for `store`; a server store is a fresh server of our own for the run."""
    if store in ("memory", "cookie"):
        yield f"{store}://"
        return
    if store != "redis":
        raise SystemExit(f"unknown store {store!r} (memory, cookie, redis)")
    sys.path.insert(0, str(ROOT))
    from testservers import RedisServer

    server = RedisServer()
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def run(spec: Any, tree: Path, url: str, pytest_args: Sequence[str]) -> int:
    env = {**os.environ, "SESSIONKIT_COMPAT_URL": url,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "pytest", "-c", spec.config, "-p", "no:cacheprovider", "-p", spec.plugin,
               "-rfExX", *spec.targets, *pytest_args]
    print(f"==> {url}: {' '.join(command[1:])}", flush=True)
    return subprocess.run(command, cwd=tree, env=env, check=False).returncode  # noqa: S603 - pytest, our arguments


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="compat.runner", description="Run a framework's own session tests "
                                     "with sessionkit swapped in; arguments after -- go to pytest.")
    parser.add_argument("framework", help="a module compat/FRAMEWORK_plugin.py with a SPEC")
    parser.add_argument("--store", action="append", help="memory, cookie or redis (default: the spec's stores)")
    argv = list(sys.argv[1:] if argv is None else argv)
    pytest_args = argv[argv.index("--") + 1:] if "--" in argv else []
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    spec = importlib.import_module(f"compat.{args.framework}_plugin").SPEC
    requirement = newest_in_matrix(spec.package)
    version = ensure_installed(requirement, spec.requirements)
    print(f"==> {spec.package} {version} (tox.ini's newest: {requirement})", flush=True)
    tree = extract(sdist(spec.package, version), spec.members, CACHE / f"{spec.package}-{version}")
    results = {}
    for store in args.store or spec.stores:
        with store_url(store) as url:
            results[store] = run(spec, tree, url, pytest_args)
    print("==> " + ", ".join(f"{store}: {'ok' if code == 0 else f'FAILED ({code})'}"
                             for store, code in results.items()), flush=True)
    return 0 if all(code == 0 for code in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
