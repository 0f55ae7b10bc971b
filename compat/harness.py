"""The pytest plugin every compat run loads (``-p compat.harness``), whatever the framework.

It reads the ``SPEC`` of the module `SPEC_VARIABLE` names and

- marks each of the spec's expected failures strict xfail, with the exception
  it must raise: a listed test that passes, or fails another way, fails the run;
- refuses a run in which a listed test is missing from a file it collected (a
  test renamed or removed upstream), checked before ``-k`` deselects anything,
  so the spec's own ``-k`` and a narrower run still check the whole list;
- prints the store and the keys it stretched in the run's summary.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import pytest

from .spec import SPEC_VARIABLE, STRETCHED, CompatSpec, store_url

__all__: list[str] = []


def _spec() -> CompatSpec:
    module = os.environ.get(SPEC_VARIABLE)
    if not module:
        raise pytest.UsageError(f"{SPEC_VARIABLE} must name the plugin module whose SPEC the run follows")
    spec = importlib.import_module(module).SPEC
    assert isinstance(spec, CompatSpec)
    return spec


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    expected = _spec().expected_failures
    collected = {item.nodeid for item in items}
    files = {nodeid.partition("::")[0] for nodeid in collected}
    stale = sorted(name for name in expected if name.partition("::")[0] in files and name not in collected)
    if stale:
        raise pytest.UsageError(f"expected failures the framework's tests no longer have (renamed upstream?): {stale}")
    for item in items:
        entry = expected.get(item.nodeid)
        if entry is not None:
            item.add_marker(pytest.mark.xfail(strict=True, raises=entry.raises, reason=entry.reason))


def pytest_report_header(config: pytest.Config) -> str:
    spec = _spec()
    return (f"sessionkit compat: {spec.package}'s own tests with sessionkit swapped in ({spec.plugin}), "
            f"store {store_url()}, {len(spec.expected_failures)} expected failures (strict)")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    if STRETCHED:
        sizes = sorted({len(raw) for raw in STRETCHED})
        terminalreporter.write_line(
            f"sessionkit compat: {len(STRETCHED)} key(s) under 32 bytes (sizes {sizes}), each refused by sessionkit "
            "(ConfigError), run with its SHA-256 hex digest")
