"""Hypothesis profiles for the property tests: more examples in CI, no deadlines anywhere.

No deadline: a 2-core CI runner under load makes single slow examples (a
200 000-deep JSON nesting, a megabyte Cookie header) look like regressions.
Not derandomized: each run explores new inputs; a failure prints a
``@reproduce_failure`` blob (and, locally, is kept in ``.hypothesis/``).
Hypothesis loads its own "ci" profile when it sees ``CI``, which derandomizes
(the same inputs every run); ours replaces it.

`settings.load_profile` is process-wide: the profile also governs `@given`
tests in modules imported after this conftest (tests/test_record.py). A
profile chosen on the command line (``--hypothesis-profile``) wins.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "sessionkit-ci", max_examples=300, deadline=None, derandomize=False, print_blob=True,
    database=None,  # an ephemeral runner keeps nothing; the blob reproduces a failure
    suppress_health_check=[HealthCheck.too_slow],  # as Hypothesis' own "ci": runner speed varies
)
settings.register_profile("sessionkit-dev", max_examples=100, deadline=None, derandomize=False)


def pytest_configure(config: pytest.Config) -> None:
    # Called for this conftest when it is imported, before the test modules below it are.
    explicit = config.getoption("hypothesis_profile", None)
    if explicit is None and settings.get_current_profile_name() in ("default", "ci"):
        settings.load_profile("sessionkit-ci" if os.environ.get("CI") else "sessionkit-dev")
