"""The store commands of the ``sessionkit`` command line, on real stores filled by real requests."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import webtest

from sessionkit import SessionManager
from sessionkit.adapters.wsgi import ENVIRON_KEY, SessionMiddleware
from sessionkit.cli import main
from sessionkit.codec import IdSigner
from sessionkit.events import id_hash
from sessionkit.ops.commands import Pacer
from sessionkit.ops.report import table

from .helpers import KEY, OLD_KEY, login_app

KEYS_ENV = "SESSIONKIT_SECRET_KEYS"


@pytest.fixture(params=["file", "redis", "cluster", "memcache"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return f"file://{tmp_path}/sessions"
    fixture = {"redis": "redis_url", "cluster": "redis_cluster_url", "memcache": "memcache_url"}[request.param]
    return str(request.getfixturevalue(fixture))


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEYS_ENV, KEY)
    monkeypatch.delenv("SESSIONKIT_URL", raising=False)


def log_in(url: str, count: int, *, key: str = KEY) -> list[str]:
    """`count` browsers log in through a real WSGI app; their session cookie values."""
    manager = SessionManager(url, secret_keys=[key])
    app = webtest.TestApp(SessionMiddleware(login_app, manager))
    values = []
    for _ in range(count):
        app.reset()
        app.get("/login")
        app.get("/count")
        values.append(app.cookies["session"])
    manager.close()
    return values


def ids_of(values: list[str]) -> list[str]:
    return [value.split(".")[0] for value in values]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    code, out, err = run(capsys, argv[0], "--json", *argv[1:])
    assert code == 0, err
    assert err == ""
    return json.loads(out)


# -- stats ----------------------------------------------------------------------------------


def test_stats_counts_every_session_in_both_forms(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    cookies = log_in(store_url, 5)
    report = run_json(capsys, "stats", "--url", store_url, "--count", "2")
    assert isinstance(report, dict)
    assert report["sessions"] == 5
    assert sum(bucket["sessions"] for bucket in report["size_histogram"]) == 5
    assert sum(bucket["sessions"] for bucket in report["ttl_histogram"]) + report["no_expiry"] == 5
    assert report["no_expiry"] == 0
    # A day's idle timeout by default (memcached's whole seconds add one): none expires within 6 h.
    assert sum(b["sessions"] for b in report["ttl_histogram"] if b["le"] in (86400, 604800)) == 5
    assert report["bytes"]["total"] > 0
    if store_url.startswith("memcache"):
        assert report["oldest_created"] is None
        assert any("creation" in what for what in report["cannot_tell"])
        assert any("exact count" in what for what in report["cannot_tell"])
    else:
        assert report["oldest_created"] is not None and report["cannot_tell"] == []
    if store_url.startswith("redis+cluster"):
        assert sum(report["nodes"].values()) == 5
        # Every master is scanned: with 30 more sessions, each holds some (a miss has odds of 1 in 60,000).
        log_in(store_url, 30)
        report = run_json(capsys, "stats", "--url", store_url)
        assert isinstance(report, dict) and report["sessions"] == 35
        assert len(report["nodes"]) == 3 and all(n > 0 for n in report["nodes"].values())
    code, out, err = run(capsys, "stats", "--url", store_url)
    assert code == 0 and err == ""
    assert f"sessions       {report['sessions']}\n" in out
    for raw in ids_of(cookies):
        assert raw not in out


def test_stats_skips_expired_and_foreign_items(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"file://{tmp_path}"
    log_in(url, 2)
    expired = next(tmp_path.glob("*.session"))
    os.utime(expired, (time.time(), time.time() - 10))
    (tmp_path / "notes.txt").write_text("not a session")
    report = run_json(capsys, "stats", "--url", url)
    assert isinstance(report, dict) and report["sessions"] == 1


def test_stats_ignores_other_prefixes_and_types_on_redis(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    import redis

    log_in(redis_url, 3)
    client = redis.Redis.from_url(redis_url)
    client.set(b"session:plain-string", b"x")  # not a hash: not a session of this layout
    client.hset(b"other:abc", b"m:c", b"1")
    client.hset(b"session:*[weird", b"m:c", b"1")  # matched literally only under its own prefix
    client.close()
    report = run_json(capsys, "stats", "--url", redis_url, "--count", "1")
    assert isinstance(report, dict) and report["sessions"] == 4  # the three, and the glob-looking hash
    report = run_json(capsys, "stats", "--url", redis_url + "?prefix=session%3A*%5B")
    assert isinstance(report, dict) and report["sessions"] == 1


# -- ls and show ----------------------------------------------------------------------------


def test_ls_names_sessions_by_hash_only(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    cookies = log_in(store_url, 3)
    listed = run_json(capsys, "ls", "--url", store_url)
    assert isinstance(listed, list)
    assert sorted(item["id_hash"] for item in listed) == sorted(id_hash(raw) for raw in ids_of(cookies))
    assert all(item["bytes"] > 0 and 0 < item["ttl"] <= 86402 for item in listed)
    code, out, err = run(capsys, "ls", "--url", store_url)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["id", "hash"] and len(lines) == 4
    # Aligned: every row's second column starts where the header's does.
    column = lines[0].index("bytes")
    assert all(line[column - 2: column] == "  " for line in lines[1:])
    for raw in ids_of(cookies):
        assert raw not in out
    limited = run_json(capsys, "ls", "--url", store_url, "--limit", "2")
    assert isinstance(limited, list) and len(limited) == 2


def test_show_by_cookie_and_by_hash(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    cookie = log_in(store_url, 2)[0]
    raw = cookie.split(".")[0]
    shown = run_json(capsys, "show", "--url", store_url, "--", cookie)
    assert isinstance(shown, dict)
    assert shown["id_hash"] == id_hash(raw) and set(shown["keys"]) == {"user", "count"} and "id" not in shown
    assert "values" not in shown
    shown = run_json(capsys, "show", "--url", store_url, "--values", "--", f"session={cookie}")
    assert isinstance(shown, dict) and shown["values"] == {"user": '"alice"', "count": "1"}
    by_hash = run_json(capsys, "show", "--url", store_url, "--", id_hash(raw))
    assert isinstance(by_hash, dict) and by_hash["id_hash"] == id_hash(raw) and by_hash["bytes"] > 0
    code, out, _ = run(capsys, "show", "--url", store_url, "--", cookie)
    assert code == 0 and raw not in out and id_hash(raw) in out
    code, out, _err = run(capsys, "show", "--url", store_url, "--show-ids", "--", cookie)
    assert code == 0 and raw in out


def test_show_of_a_missing_session_exits_3(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "show", "--url", store_url, "0" * 16)
    assert code == 3 and out == "" and err.count("\n") == 1 and "no session" in err
    code, out, err = run(capsys, "show", "--url", store_url, "--", IdSigner([KEY.encode()]).sign("A" * 43))
    assert code == 3 and "no session" in err


# -- rm and gc ------------------------------------------------------------------------------


def test_rm_by_cookie_and_by_hash_ends_the_sessions(store_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    cookies = log_in(store_url, 3)
    raws = ids_of(cookies)
    removed = run_json(capsys, "rm", "--url", store_url, "--", cookies[0], id_hash(raws[1]))
    assert isinstance(removed, list)
    assert sorted((item["id_hash"], item["removed"]) for item in removed) == sorted(
        [(id_hash(raws[0]), True), (id_hash(raws[1]), True)])
    left = run_json(capsys, "ls", "--url", store_url)
    assert isinstance(left, list) and [item["id_hash"] for item in left] == [id_hash(raws[2])]
    # The browser whose session was removed gets a fresh one.
    manager = SessionManager(store_url, secret_keys=[KEY])
    app = webtest.TestApp(SessionMiddleware(login_app, manager))
    app.set_cookie("session", cookies[0])
    assert app.get("/").text == "user=None count=None"
    manager.close()
    code, out, _err = run(capsys, "rm", "--url", store_url, "--", cookies[0])
    assert code == 3 and "not found" in out


def test_rm_rate_limits_deletes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"file://{tmp_path}"
    cookies = log_in(url, 5)
    started = time.monotonic()
    code, _, err = run(capsys, "rm", "--url", url, "--rate", "20", "--", *cookies)
    assert code == 0, err
    assert time.monotonic() - started >= 4 / 20
    assert list(tmp_path.glob("*.session")) == []


def test_pacer_spaces_calls() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(10, clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        pacer.wait()
    assert slept == pytest.approx([0.1, 0.1, 0.1])
    unlimited = Pacer(None, clock=lambda: now[0], sleep=sleep)
    unlimited.wait()
    assert len(slept) == 3


def test_gc_removes_expired_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"file://{tmp_path}"
    log_in(url, 3)
    for path in list(tmp_path.glob("*.session"))[:2]:
        os.utime(path, (time.time(), time.time() - 1))
    result = run_json(capsys, "gc", "--url", url)
    assert isinstance(result, dict) and result["removed"] == 2
    assert len(list(tmp_path.glob("*.session"))) == 1


def test_gc_on_self_expiring_stores_says_so(redis_url: str, memcache_url: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    for url in (redis_url, memcache_url):
        code, out, _err = run(capsys, "gc", "--url", url)
        assert code == 0 and "expires sessions itself" in out


# -- verify-cookie --------------------------------------------------------------------------


def test_verify_cookie_names_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    current = IdSigner([KEY.encode()]).sign("B" * 43)
    old = IdSigner([OLD_KEY.encode()]).sign("B" * 43)
    monkeypatch.setenv(KEYS_ENV, f"{KEY},{OLD_KEY}")
    result = run_json(capsys, "verify-cookie", "--", current)
    assert result == {"valid": True, "format": "native", "id_hash": id_hash("B" * 43), "key": 1,
                      "resigned": False, "expiry": "kept by the store (the cookie carries no expiry)"}
    result = run_json(capsys, "verify-cookie", f"session={old}")
    assert isinstance(result, dict) and result["key"] == 2 and result["resigned"] is True
    code, out, _ = run(capsys, "verify-cookie", "--", old)
    assert code == 0 and "re-signs" in out and "B" * 43 not in out
    monkeypatch.setenv(KEYS_ENV, KEY)
    code, out, _err = run(capsys, "verify-cookie", "--json", "--", old)
    assert code == 4 and json.loads(out)["valid"] is False and json.loads(out)["format"] == "native"


# -- hostile arguments ----------------------------------------------------------------------

HOSTILE = [
    (["stats", "--url", "memory://"], 2, "lives inside one process"),
    (["stats", "--url", "cookie://"], 2, "browser"),
    (["stats", "--url", "redis://[::1"], 2, "malformed"),
    (["stats", "--url", "gopher://x"], 2, "unknown store scheme"),
    (["stats", "--url", "file:///tmp?fsync=maybe"], 2, "fsync"),
    (["stats", "--url", "redis://127.0.0.1:1/0?timeout=0.2&connect_timeout=0.2"], 1, "unavailable"),
    (["stats", "--url", "memcache://127.0.0.1:1?connect_timeout=0.2"], 1, "unavailable"),
    (["stats"], 2, "SESSIONKIT_URL"),
    (["stats", "--url", "file:///tmp/x", "--count", "0"], 2, "positive"),
    (["rm", "--url", "file:///tmp/x", "--rate", "nan", "0" * 16], 2, "positive"),
    (["rm", "--url", "file:///tmp/x", "--rate", "-1", "0" * 16], 2, "positive"),
    (["rm", "--url", "file:///tmp/x", "../../etc/passwd"], 4, "does not verify"),
    (["rm", "--url", "file:///tmp/x", "%2Fetc%2Fpasswd"], 2, "expected a session id"),
    (["show", "--url", "file:///tmp/x", "A" * 43 + "." + "B" * 43], 4, "does not verify"),
    (["show", "--url", "file:///tmp/x", "\x00ä" * 3000], 2, "expected a session id"),
    (["ls", "--url", "file:///tmp/x", "--limit", "1e9"], 2, "not a number"),
    (["revoke", "--url", "file:///tmp/x"], 2, "--user"),
    (["frobnicate"], 2, "invalid choice"),
    (["rm", "--url", "file:///tmp/x", "-" + "S" * 42 + ".sig"], 2, "goes after '--'"),
    (["rm", "--url", "file:///tmp/x", "0" * 16, "-" + "S" * 42 + ".sig"], 2, "goes after '--'"),
    (["verify-cookie", "garbage"], 4, "does not verify"),
]


@pytest.mark.parametrize(("argv", "code", "says"), HOSTILE)
def test_hostile_arguments_get_one_line(argv: list[str], code: int, says: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    got, out, err = run(capsys, *argv)
    assert got == code
    said = err if code != 4 or argv[0] != "verify-cookie" else out
    assert says in said
    assert "Traceback" not in err
    assert err.count("\n") <= 1
    assert "S" * 42 not in err  # never echoes what may be a session id


def test_real_process_has_no_traceback(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "sessionkit"
    env = {**os.environ, KEYS_ENV: KEY, "SESSIONKIT_URL": "redis://127.0.0.1:1/0?connect_timeout=0.2"}
    result = subprocess.run([str(script), "ls"], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 1
    assert result.stdout == "" and result.stderr.count("\n") == 1 and "unavailable" in result.stderr
    env["SESSIONKIT_URL"] = f"file://{tmp_path}"
    result = subprocess.run([str(script), "stats", "--json"], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 0 and json.loads(result.stdout)["sessions"] == 0


def test_table_aligns_numbers_right() -> None:
    assert table(["name", "n"], [["a", 5], ["bbb", 12345]]).splitlines() == [
        "name      n", "a         5", "bbb   12345"]



def test_operations_doc_lists_every_command_and_exit_code() -> None:
    import re

    from sessionkit.cli import build_parser

    doc = (Path(__file__).resolve().parents[1] / "docs" / "operations.md").read_text()
    documented = set(re.findall(r"^\| `([a-z-]+)[ `]", doc, flags=re.MULTILINE))
    listed = set(re.findall(r"^    ([a-z-]+)(?: |$)", build_parser().format_help(), flags=re.MULTILINE))
    assert listed == documented
    codes = set(re.findall(r"^\| (\d+) \|", doc, flags=re.MULTILINE))
    assert codes == {"0", "1", "2", "3", "4", "130"}


def test_stats_on_a_sentinel_managed_master(redis_sentinel_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    cookies = log_in(redis_sentinel_url, 3)
    report = run_json(capsys, "stats", "--url", redis_sentinel_url)
    assert isinstance(report, dict) and report["sessions"] == 3
    removed = run_json(capsys, "rm", "--url", redis_sentinel_url, "--", cookies[0])
    assert removed == [{"id_hash": id_hash(cookies[0].split(".")[0]), "removed": True}]


def test_progress_bar_only_on_a_terminal() -> None:
    import pty

    from sessionkit.ops.progress import DELAY_SECONDS, with_progress

    items = [1, 2, 3]
    assert with_progress(items, label="scanning") is items  # stderr is no terminal here: the very same object
    main_fd, tty_fd = pty.openpty()
    with os.fdopen(tty_fd, "w") as terminal:
        assert with_progress(items, label="scanning", enabled=False, stream=terminal) is items
        quick = with_progress(iter(items), label="scanning", stream=terminal)
        assert list(quick) == items

        def slow() -> Iterator[int]:
            for item in items:
                time.sleep(DELAY_SECONDS * 0.6)
                yield item

        assert list(with_progress(slow(), label="scanning", stream=terminal)) == items
        terminal.flush()
        os.set_blocking(main_fd, False)
        drawn = os.read(main_fd, 65536)
    os.close(main_fd)
    assert b"scanning: 2 sessions" in drawn
    assert b"scanning: 1 sessions" not in drawn  # a walk shorter than the delay draws nothing


# -- sessions per user --------------------------------------------------------------------------

#: Whether this sessionkit keeps a per-user index (`SessionManager(user_index=True)`).
HAS_INDEX = "user_index" in inspect.signature(SessionManager).parameters


def user_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    session = environ[ENVIRON_KEY]
    user = environ["QUERY_STRING"].partition("=")[2]
    session.regenerate()
    session["user"] = user
    session.bind_user(user)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


@pytest.fixture(params=["file", "redis", "cluster"])
def index_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "file":
        return f"file://{tmp_path}/sessions"
    return str(request.getfixturevalue({"redis": "redis_url", "cluster": "redis_cluster_url"}[request.param]))


def log_in_as(url: str, *users: str) -> list[str]:
    manager = SessionManager(url, secret_keys=[KEY], user_index=True)
    app = webtest.TestApp(SessionMiddleware(user_app, manager))
    values = []
    for user in users:
        app.reset()
        app.get(f"/login?user={user}")
        values.append(app.cookies["session"])
    manager.close()
    return values


def test_ls_and_revoke_by_user(index_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    if not HAS_INDEX:
        code, out, err = run(capsys, "ls", "--url", index_url, "--user", "alice")
        assert code == 2 and out == "" and "per-user index" in err and err.count("\n") == 1
        code, out, err = run(capsys, "revoke", "--url", index_url, "--user", "alice")
        assert code == 2 and "per-user index" in err
        return
    first, second, bob = log_in_as(index_url, "alice", "alice", "bob")
    listed = run_json(capsys, "ls", "--url", index_url, "--user", "alice")
    assert isinstance(listed, list)
    assert sorted(item["id_hash"] for item in listed) == sorted(id_hash(value.split(".")[0])
                                                               for value in (first, second))
    code, out, _ = run(capsys, "ls", "--url", index_url, "--user", "alice")
    assert code == 0 and first.split(".")[0] not in out and id_hash(first.split(".")[0]) in out
    ended = run_json(capsys, "revoke", "--url", index_url, "--user", "alice", "--except", first)
    assert ended == {"user": "alice", "ended": 1}
    listed = run_json(capsys, "ls", "--url", index_url, "--user", "alice")
    assert isinstance(listed, list) and [item["id_hash"] for item in listed] == [id_hash(first.split(".")[0])]
    assert run_json(capsys, "revoke", "--url", index_url, "--user", "alice") == {"user": "alice", "ended": 1}
    assert run_json(capsys, "ls", "--url", index_url, "--user", "alice") == []
    assert len(run_json(capsys, "ls", "--url", index_url, "--user", "bob")) == 1  # type: ignore[arg-type]
    assert run_json(capsys, "ls", "--url", index_url, "--user", "nobody") == []
    code, _, err = run(capsys, "revoke", "--url", index_url, "--user", "bob", "--except", "0" * 16)
    assert code == 2 and "not its hash" in err
    del bob
