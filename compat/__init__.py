"""Frameworks' own session tests, run with sessionkit swapped in for their session.

`compat.runner` (``scripts/framework-compat FRAMEWORK``; ``scripts/test`` runs
every framework) is generic: it installs the newest release of the framework
that ``tox.ini`` tests, downloads its sdist, extracts its session tests and runs
them on each store with `compat.harness` and the framework's plugin,
``compat/FRAMEWORK_plugin.py``, whose ``SPEC`` (a `compat.spec.CompatSpec`)
says what to run and which tests fail on purpose, and why. The run fails on any
other failure, on a listed test that passes, and on a listed test that is gone.
"""
