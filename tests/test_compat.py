"""The harness that runs frameworks' own session tests: strict expected failures, specs in step with the docs."""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path

import pytest

from compat import runner
from compat.spec import SPEC_VARIABLE, STRETCHED, URL_VARIABLE, CompatSpec, stretch_key
from sessionkit import ConfigError, SessionManager

from .helpers import KEY

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[1]
MIGRATING = ROOT / "docs" / "frameworks" / "migrating.md"
FRAMEWORKS = sorted(path.name.removesuffix("_plugin.py") for path in (ROOT / "compat").glob("*_plugin.py"))


def _spec(framework: str) -> CompatSpec:
    spec = importlib.import_module(f"compat.{framework}_plugin").SPEC
    assert isinstance(spec, CompatSpec)
    return spec


def test_every_framework_has_a_plugin() -> None:
    assert FRAMEWORKS == ["flask", "starlette"]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_migrating_guide_lists_exactly_the_expected_failures(framework: str) -> None:
    """Each framework's section lists each expected failure, and the exception it must raise, as its SPEC does."""
    spec = _spec(framework)
    section = MIGRATING.read_text().split(f"## {spec.package.capitalize()}'s own tests", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(test_[^`]+)` \| `(\w+)` \|", section, flags=re.MULTILINE))
    assert listed == {(node_id.rpartition("::")[2], entry.raises.__name__)
                      for node_id, entry in spec.expected_failures.items()}
    assert f"scripts/framework-compat {framework}" in section and f"tox -e compat-{framework}" in section


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_each_framework_has_its_tox_env_and_a_matrix_line(framework: str) -> None:
    tox = (ROOT / "tox.ini").read_text()
    assert f"[testenv:compat-{framework}]\n" in tox
    assert f"commands = python -m compat.runner {framework} {{posargs}}" in tox
    assert runner.newest_in_matrix(_spec(framework).package).name == framework


def test_newest_in_matrix_takes_the_highest_lower_bound(tmp_path: Path) -> None:
    tox = tmp_path / "tox.ini"
    tox.write_text("[testenv]\ndeps =\n    flask23: flask>=2.3,<2.4\n    flask31: flask>=3.1,<3.2\n"
                   "    flask30: flask>=3.0,<3.1\n    bottle012: bottle>=0.12\n")
    assert str(runner.newest_in_matrix("flask", tox)) == "flask<3.2,>=3.1"
    with pytest.raises(SystemExit, match="names no starlette"):
        runner.newest_in_matrix("starlette", tox)


# --- keys ------------------------------------------------------------------------------


def _refuse_like_core(key: str | bytes) -> None:
    SessionManager("memory://", secret_keys=[key])


def test_a_short_key_is_stretched_only_after_sessionkit_refuses_it() -> None:
    stretched = stretch_key("test key", _refuse_like_core, "secret_keys")
    assert isinstance(stretched, str) and len(stretched) == 64 and STRETCHED[b"test key"] == stretched
    assert stretch_key("test key", _refuse_like_core, "secret_keys") == stretched
    assert stretch_key("other key", _refuse_like_core, "secret_keys") != stretched
    assert stretch_key(KEY, _refuse_like_core, "secret_keys") == KEY


def test_a_key_refused_for_another_option_or_accepted_is_not_stretched() -> None:
    with pytest.raises(AssertionError, match="not 'SECRET_KEY'"):
        stretch_key("short", _refuse_like_core, "SECRET_KEY")

    def accept(key: str | bytes) -> None:
        pass

    with pytest.raises(AssertionError, match="accepted a 5-byte"):
        stretch_key("brief", accept, "secret_keys")
    assert b"brief" not in STRETCHED


def test_the_adapters_refuse_the_keys_their_frameworks_tests_use() -> None:
    from compat import flask_plugin, starlette_plugin

    with pytest.raises(ConfigError) as flask_refusal:
        flask_plugin._refuse("test key")
    assert flask_refusal.value.option == "SECRET_KEY"
    with pytest.raises(ConfigError) as starlette_refusal:
        starlette_plugin._refuse("example")
    assert starlette_refusal.value.option == "secret_key"


# --- strict expected failures ----------------------------------------------------------

FAKE_TESTS = """
def test_passes():
    pass

def test_fails():
    assert False

def test_fails_otherwise():
    raise KeyError("x")

def test_unlisted():
    pass
"""


def _fake_run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, expected: dict[str, str],
              *args: str) -> pytest.RunResult:
    """A run of the fake framework's tests under `compat.harness`, with `expected` node id -> exception name."""
    entries = ", ".join(f"{node!r}: ExpectedFailure('on purpose', {raises})" for node, raises in expected.items())
    pytester.makepyfile(fake_plugin=f"from compat.spec import CompatSpec, ExpectedFailure\n"
                                    f"SPEC = CompatSpec(package='fake', members=(), targets=(), config='',"
                                    f" plugin='fake_plugin', requirements=(), expected_failures={{{entries}}})\n",
                        test_fake=FAKE_TESTS)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(pytester.path)]))
    monkeypatch.setenv(SPEC_VARIABLE, "fake_plugin")
    monkeypatch.setenv(URL_VARIABLE, "memory://")
    return pytester.runpytest_subprocess("-p", "compat.harness", "-p", "no:cacheprovider", "test_fake.py", *args)


def test_listed_failures_are_expected_and_the_rest_pass(pytester: pytest.Pytester,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    result = _fake_run(pytester, monkeypatch, {"test_fake.py::test_fails": "AssertionError",
                                               "test_fake.py::test_fails_otherwise": "KeyError"})
    result.assert_outcomes(passed=2, xfailed=2)
    assert result.ret == 0


def test_a_listed_test_that_passes_or_fails_otherwise_fails_the_run(pytester: pytest.Pytester,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    result = _fake_run(pytester, monkeypatch, {"test_fake.py::test_passes": "AssertionError",
                                               "test_fake.py::test_fails_otherwise": "AssertionError",
                                               "test_fake.py::test_fails": "AssertionError"})
    result.assert_outcomes(passed=1, failed=2, xfailed=1)
    result.stdout.fnmatch_lines(["FAILED test_fake.py::test_passes - [[]XPASS(strict)[]] on purpose",
                                 "FAILED test_fake.py::test_fails_otherwise - KeyError*"])
    assert result.ret == 1


@pytest.mark.parametrize("selection", [(), ("-k", "passes")])
def test_a_listed_test_no_longer_collected_stops_the_run(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
                                                         selection: tuple[str, ...]) -> None:
    """Checked before ``-k`` deselects anything: a narrower run checks the whole list too."""
    result = _fake_run(pytester, monkeypatch, {"test_fake.py::test_renamed": "AssertionError"}, *selection)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*no longer have*test_fake.py::test_renamed*"])


# --- downloads -------------------------------------------------------------------------


def test_a_failed_download_ends_with_one_line_saying_what_to_do(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)  # no configured mirror or local wheels
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # discard port: refused at once
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    with pytest.raises(SystemExit) as exc:
        runner.sdist("flask", "3.1.3", cache=tmp_path)
    message = str(exc.value.code)
    assert "\n" not in message
    assert message.startswith("framework-compat: pip could not download the sdist of flask==3.1.3")
    assert "check the network and run again" in message and str(tmp_path / "pip.log") in message
    assert "No matching distribution found for flask==3.1.3" in (tmp_path / "pip.log").read_text()  # pip's own words
    assert not list(tmp_path.glob("sdists/*.tar.gz"))


def test_a_downloaded_sdist_is_used_again_without_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sdists").mkdir()
    cached = tmp_path / "sdists" / "Flask-3.1.3.tar.gz"
    cached.write_bytes(b"")
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")  # any pip call would fail
    assert runner.sdist("flask", "3.1.3", cache=tmp_path) == cached
