"""Frameworks' own session tests, run with sessionkit swapped in for their session.

`python -m compat.run flask` downloads the framework's sdist (the newest release
``tox.ini`` tests against), extracts its tests and runs the session ones with a
pytest plugin of ours (`compat.flask_plugin`) that makes sessionkit every app's
session interface, on ``memory://`` and on a real redis-server. Tests that fail
on purpose are listed, each with its reason, in `compat.flask_expected`; the run
fails on any other failure, and on any listed test that passes.
"""
