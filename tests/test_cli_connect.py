"""The store commands on sessions in connect-redis's format (``--codec connect``), on real Redis and Cluster,
written by `SessionManager(codec="connect")` and by the real Express app of the interop tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
import redis
import redis.cluster
import webtest

from sessionkit import SessionManager
from sessionkit.adapters.wsgi import SessionMiddleware
from sessionkit.cli import main
from sessionkit.express import ConnectSigner
from sessionkit.naming import id_hash
from sessionkit.ops.connect_inventory import MAX_DOCUMENT_BYTES
from testservers import RedisServer

from .helpers import KEY, OLD_KEY, login_app
from .interop.test_express import DAY_MS, NEW, OLD, cookie_of, node, start_express

KEYS_ENV = "SESSIONKIT_SECRET_KEYS"


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEYS_ENV, KEY)
    monkeypatch.delenv("SESSIONKIT_URL", raising=False)
    monkeypatch.delenv("SESSIONKIT_CODEC", raising=False)


@pytest.fixture(params=["redis", "cluster"])
def url(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue({"redis": "redis_url", "cluster": "redis_cluster_url"}[request.param]))


def client_for(url: str) -> Any:
    """A plain redis-py client on the store (a cluster client for redis+cluster://)."""
    if url.startswith("redis+cluster://"):
        host, port = url.split("://", 1)[1].split("/")[0].split(",")[0].split(":")
        return redis.cluster.RedisCluster(host=host, port=int(port))
    return redis.Redis.from_url(url)


def log_in(url: str, count: int, *, key: str = KEY) -> list[str]:
    """`count` browsers log in through a real WSGI app in Express's format; their connect.sid values (s%3A…)."""
    manager = SessionManager(url, secret_keys=[key], codec="connect")
    app = webtest.TestApp(SessionMiddleware(login_app, manager))
    values = []
    for _ in range(count):
        app.reset()
        app.get("/login")
        app.get("/count")
        values.append(app.cookies["connect.sid"])
    manager.close()
    return values


def id_of(value: str) -> str:
    """The raw id in a connect.sid value."""
    return unquote(value)[2:].rpartition(".")[0]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    code, out, err = run(capsys, argv[0], "--json", *argv[1:])
    assert code == 0, err
    assert err == ""
    return json.loads(out)


# -- stats and ls ---------------------------------------------------------------------------------


def test_stats_counts_connect_sessions_in_both_forms(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    cookies = log_in(url, 5)
    report = run_json(capsys, "stats", "--url", url, "--codec", "connect", "--count", "2")
    assert report["sessions"] == 5 and report["unreadable"] == 0 and report["foreign"] == 0
    assert "connect-redis documents" in report["store"] and "'sess:'" in report["store"]
    assert sum(bucket["sessions"] for bucket in report["size_histogram"]) == 5
    # cookie.maxAge of a day: every TTL is within (6 h, 1 day]
    assert sum(b["sessions"] for b in report["ttl_histogram"] if b["le"] == 86400) == 5
    assert report["no_expiry"] == 0
    assert report["oldest_created"] is None and any("creation" in what for what in report["cannot_tell"])
    # Last used = TTL less originalMaxAge: within the last minute.
    for name in ("oldest_access", "last_access"):
        assert abs(time.mktime(time.strptime(report[name], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone - time.time()) < 60
    assert report["expires_first"] <= report["expires_last"]
    if url.startswith("redis+cluster"):
        log_in(url, 30)
        report = run_json(capsys, "stats", "--url", url, "--codec", "connect")
        assert report["sessions"] == 35
        assert len(report["nodes"]) == 3 and all(n > 0 for n in report["nodes"].values())
    code, out, err = run(capsys, "stats", "--url", url, "--codec", "connect")
    assert code == 0 and err == ""
    assert f"sessions       {report['sessions']}\n" in out
    assert "unreadable     0\n" in out and "foreign keys   0\n" in out
    assert "cannot tell: creation times" in out
    for value in cookies:
        assert id_of(value) not in out


def test_the_codec_comes_from_the_environment_and_the_option_overrides_it(
        redis_url: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    log_in(redis_url, 2)
    native = run_json(capsys, "stats", "--url", redis_url)
    assert native["sessions"] == 0 and native["foreign"] is None  # sessionkit's own layout: none there
    monkeypatch.setenv("SESSIONKIT_CODEC", "connect")
    assert run_json(capsys, "stats", "--url", redis_url)["sessions"] == 2
    assert run_json(capsys, "stats", "--url", redis_url, "--codec", "native")["sessions"] == 0
    monkeypatch.setenv("SESSIONKIT_CODEC", "express")
    code, out, err = run(capsys, "stats", "--url", redis_url)
    assert code == 2 and out == "" and "SESSIONKIT_CODEC" in err and err.count("\n") == 1


def test_the_url_prefix_is_connect_redis_prefix(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    prefixed = redis_url + "?prefix=app%3Asess%3A"
    log_in(prefixed, 2)
    log_in(redis_url, 1)
    assert run_json(capsys, "stats", "--url", prefixed, "--codec", "connect")["sessions"] == 2
    assert run_json(capsys, "stats", "--url", redis_url, "--codec", "connect")["sessions"] == 1


def test_ls_names_connect_sessions_by_hash_only(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    cookies = log_in(url, 3)
    listed = run_json(capsys, "ls", "--url", url, "--codec", "connect")
    assert sorted(item["id_hash"] for item in listed) == sorted(id_hash(id_of(value)) for value in cookies)
    assert all(item["bytes"] > 0 and 86000 < item["ttl"] <= 86400 for item in listed)
    assert all(item["created"] is None and item["accessed"] is not None for item in listed)
    assert all("stored_name" not in item and "unreadable" not in item for item in listed)
    code, out, err = run(capsys, "ls", "--url", url, "--codec", "connect")
    assert code == 0 and err == "" and len(out.splitlines()) == 4
    for value in cookies:
        assert id_of(value) not in out
    # Connect keys hold the raw id: --show-ids prints it, as the docs say.
    shown = run_json(capsys, "ls", "--url", url, "--codec", "connect", "--show-ids", "--limit", "2")
    assert len(shown) == 2 and {item["stored_name"] for item in shown} <= {id_of(value) for value in cookies}


def test_unreadable_documents_and_foreign_keys_are_counted_apart(redis_url: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    cookies = log_in(redis_url, 2)
    client = redis.Redis.from_url(redis_url)
    client.set("sess:notjson", b"{not json", ex=600)
    client.set("sess:array", b'[{"cookie":{}}]', ex=600)
    client.set("sess:nocookie", b'{"user":"x"}', ex=600)
    client.set("sess:badutf8", b'{"cookie":{"originalMaxAge":null,"expires":null},"u":"\xff"}', ex=600)
    client.set("sess:huge", b'{"cookie":{},"pad":"' + b"x" * MAX_DOCUMENT_BYTES + b'"}', ex=600)
    client.hset("sess:ahash", "m:c", "1")
    client.rpush("sess:alist", "x")
    client.set("session:other", b"{}")  # another prefix: not walked
    report = run_json(capsys, "stats", "--url", redis_url, "--codec", "connect", "--count", "3")
    assert report["sessions"] == 2 and report["unreadable"] == 5 and report["foreign"] == 2
    code, out, _err = run(capsys, "stats", "--url", redis_url, "--codec", "connect")
    assert code == 0 and "unreadable     5\n" in out and "foreign keys   2\n" in out

    listed = run_json(capsys, "ls", "--url", redis_url, "--codec", "connect")
    problems = {item["id_hash"]: item.get("unreadable") for item in listed}
    assert len(problems) == 7  # the two sessions and the five unreadable documents; no foreign key
    assert "member without a name" in problems[id_hash("notjson")]
    assert "not a JSON object" in problems[id_hash("array")]
    assert "no cookie object" in problems[id_hash("nocookie")]
    assert "not valid JSON" in problems[id_hash("badutf8")]
    assert "larger than any session document" in problems[id_hash("huge")]
    assert problems[id_hash(id_of(cookies[0]))] is None
    code, out, _err = run(capsys, "ls", "--url", redis_url, "--codec", "connect")
    assert code == 0 and out.splitlines()[0].endswith("unreadable") and "member without a name" in out

    # show: one line on stderr, exit 1, never a traceback; by raw id and by id hash.
    for argument in ("notjson", id_hash("nocookie"), "huge"):
        code, out, err = run(capsys, "show", "--url", redis_url, "--codec", "connect", argument)
        assert code == 1 and out == "" and "unreadable" in err and err.count("\n") == 1
    code, out, err = run(capsys, "show", "--url", redis_url, "--codec", "connect", "ahash")
    assert code == 1 and "holds a hash, not a connect-redis document" in err and err.count("\n") == 1

    # rm: an unreadable document goes (by hash or id); a key of another type is left alone.
    removed = run_json(capsys, "rm", "--url", redis_url, "--codec", "connect", id_hash("notjson"), "array")
    assert sorted(item["removed"] for item in removed) == [True, True]
    code, out, _err = run(capsys, "rm", "--url", redis_url, "--codec", "connect", "ahash")
    assert code == 3 and "left alone" in out
    assert client.exists("sess:ahash", "sess:alist", "session:other") == 3
    assert client.exists("sess:notjson", "sess:array") == 0
    client.close()
    # A walk still finds the sessions among what is left.
    assert run_json(capsys, "stats", "--url", redis_url, "--codec", "connect")["sessions"] == 2


# -- show, rm, gc ---------------------------------------------------------------------------------


def test_show_by_cookie_id_and_hash(url: str, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    value = log_in(url, 2)[0]
    raw = id_of(value)
    # No codec given: an s%3A… value is Express's.
    shown = run_json(capsys, "show", "--url", url, "--", value)
    assert shown["id_hash"] == id_hash(raw) and shown["key"] == 1 and shown["resigned"] is False
    assert shown["keys"] == {"user": len('"alice"'), "count": 1} and "values" not in shown and "id" not in shown
    assert shown["max_age_ms"] == DAY_MS and shown["cookie_expires"].endswith("Z")
    assert 86000 < shown["ttl"] <= 86400 and shown["bytes"] > shown["document_bytes"] > 50 and "created" not in shown
    for form in (f"connect.sid={value}", unquote(value), f'"{value}"'):
        assert run_json(capsys, "show", "--url", url, "--", form)["id_hash"] == id_hash(raw)
    shown = run_json(capsys, "show", "--url", url, "--codec", "connect", "--values", "--", raw)
    assert shown["values"] == {"user": '"alice"', "count": "1"} and "key" not in shown
    by_hash = run_json(capsys, "show", "--url", url, "--codec", "connect", id_hash(raw))
    assert by_hash["keys"] == {"user": 7, "count": 1} and by_hash["id_hash"] == id_hash(raw)
    code, out, _err = run(capsys, "show", "--url", url, "--", value)
    assert code == 0 and raw not in out and id_hash(raw) in out and "max_age_ms" in out
    code, out, _err = run(capsys, "show", "--url", url, "--show-ids", "--", value)
    assert code == 0 and raw in out
    # Signed by a key that is now the older one: verified by key 2, and sessionkit would re-sign it.
    monkeypatch.setenv(KEYS_ENV, f"{OLD_KEY},{KEY}")
    shown = run_json(capsys, "show", "--url", url, "--", value)
    assert shown["key"] == 2 and shown["resigned"] is True


def test_show_and_rm_of_a_missing_session_exit_3(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    cookie = ConnectSigner([KEY.encode()]).sign("A" * 32)
    for argv in (["show", cookie], ["show", "--codec", "connect", "A" * 32], ["show", "--codec", "connect", "0" * 16],
                 ["rm", cookie]):
        code, out, err = run(capsys, *argv[:-1], "--url", redis_url, "--", argv[-1])
        assert code == 3 and ("no session" in err or "not found" in out)


def test_rm_by_cookie_id_and_hash_ends_sessions_for_the_browser(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    cookies = log_in(url, 4)
    raws = [id_of(value) for value in cookies]
    removed = run_json(capsys, "rm", "--url", url, "--rate", "100", "--", cookies[0], id_hash(raws[1]))
    assert sorted((item["id_hash"], item["removed"]) for item in removed) == sorted(
        [(id_hash(raws[0]), True), (id_hash(raws[1]), True)])
    removed = run_json(capsys, "rm", "--url", url, "--codec", "connect", "--", raws[2])  # an id may start with '-'
    assert removed == [{"id_hash": id_hash(raws[2]), "removed": True}]
    left = run_json(capsys, "ls", "--url", url, "--codec", "connect")
    assert [item["id_hash"] for item in left] == [id_hash(raws[3])]
    manager = SessionManager(url, secret_keys=[KEY], codec="connect")
    app = webtest.TestApp(SessionMiddleware(login_app, manager))
    app.set_cookie("connect.sid", cookies[0])
    assert app.get("/").text == "user=None count=None"
    app.set_cookie("connect.sid", cookies[3])
    assert app.get("/").text == "user=alice count=1"
    manager.close()
    code, out, _err = run(capsys, "rm", "--url", url, "--", cookies[0])
    assert code == 3 and "not found" in out


def test_gc_says_redis_expires_documents_itself(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    log_in(redis_url, 1)
    code, out, _err = run(capsys, "gc", "--url", redis_url, "--codec", "connect")
    assert code == 0 and "Redis expires connect-redis's documents itself" in out
    assert run_json(capsys, "gc", "--url", redis_url, "--codec", "connect")["removed"] == 0
    assert run_json(capsys, "stats", "--url", redis_url, "--codec", "connect")["sessions"] == 1


def test_per_user_commands_say_the_format_has_no_index(redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["ls", "--user", "alice"], ["revoke", "--user", "alice"]):
        code, out, err = run(capsys, argv[0], "--url", redis_url, "--codec", "connect", *argv[1:])
        assert code == 2 and out == "" and "keeps no per-user index" in err and err.count("\n") == 1


# -- verify-cookie --------------------------------------------------------------------------------


def test_verify_cookie_reads_both_formats(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from sessionkit.codec import IdSigner

    express = ConnectSigner([KEY.encode()]).sign("C" * 32)
    older = ConnectSigner([OLD_KEY.encode()]).sign("C" * 32)
    native = IdSigner([KEY.encode()]).sign("B" * 43)
    monkeypatch.setenv(KEYS_ENV, f"{KEY},{OLD_KEY}")
    # No codec given: the s: prefix decides.
    assert run_json(capsys, "verify-cookie", "--", express) == {
        "valid": True, "format": "connect", "id_hash": id_hash("C" * 32), "key": 1, "resigned": False,
        "expiry": "kept by the store (cookie.expires in the document; the cookie value carries none)"}
    assert run_json(capsys, "verify-cookie", "--", unquote(older))["key"] == 2
    assert run_json(capsys, "verify-cookie", "--", f"connect.sid={older}")["resigned"] is True
    assert run_json(capsys, "verify-cookie", "--", native)["format"] == "native"
    code, out, _err = run(capsys, "verify-cookie", "--", older)
    assert code == 0 and "key 2" in out and "Express sends it again only when" in out and "C" * 32 not in out
    code, out, _err = run(capsys, "verify-cookie", "--show-ids", "--", older)
    assert code == 0 and "C" * 32 in out
    # A codec given that the value does not fit: a clear verdict, exit 4.
    code, out, _err = run(capsys, "verify-cookie", "--codec", "native", "--", express)
    assert code == 4 and "--codec connect" in out
    monkeypatch.setenv("SESSIONKIT_CODEC", "connect")
    code, out, _err = run(capsys, "verify-cookie", "--json", "--", native)
    verdict = json.loads(out)
    assert code == 4 and verdict["valid"] is False and verdict["format"] == "connect"
    assert "--codec native" in verdict["reason"]
    assert run_json(capsys, "verify-cookie", "--codec", "native", "--", native)["format"] == "native"


FORGED = ConnectSigner([b"x" * 32]).sign("D" * 32)
GOOD = ConnectSigner([KEY.encode()]).sign("D" * 32)

HOSTILE = [
    (["verify-cookie", FORGED], 4, "does not verify"),
    (["verify-cookie", GOOD[:-5]], 4, "does not verify"),  # truncated signature
    (["verify-cookie", GOOD[:12]], 4, "does not verify"),  # truncated before the dot
    (["verify-cookie", "s%3A" + "D" * 5000 + ".sig"], 4, "longer than the 4096 bytes"),
    (["verify-cookie", "s%3A%E0%A4%A.sig"], 4, "not validly URL-encoded"),
    (["verify-cookie", "s%3A.abc"], 4, "does not verify"),  # an empty id
    (["verify-cookie", "s:\udcff.abc"], 4, "does not verify"),  # no UTF-8 form
    (["show", "--url", "redis://127.0.0.1:1/0", FORGED], 4, "does not verify"),
    (["rm", "--url", "redis://127.0.0.1:1/0", GOOD[:-5]], 4, "does not verify"),
    (["show", "--url", "redis://127.0.0.1:1/0", "s%3A" + "D" * 5000 + ".x"], 4, "longer than the 4096 bytes"),
    (["show", "--url", "redis://127.0.0.1:1/0", "--codec", "connect", "D" * 32 + ".xyz"], 4, "not an Express"),
    (["show", "--url", "redis://127.0.0.1:1/0", "--codec", "connect", "a b;c"], 2, "expected a session id"),
    (["show", "--url", "redis://127.0.0.1:1/0", "--codec", "connect", "D" * 300], 2, "expected a session id"),
    (["stats", "--url", "file:///tmp/x", "--codec", "connect"], 2, "live in Redis"),
    (["stats", "--url", "memcache://127.0.0.1:1", "--codec", "connect"], 2, "live in Redis"),
    (["stats", "--url", "memory://", "--codec", "connect"], 2, "live in Redis"),
    (["stats", "--url", "redis://127.0.0.1:1/0", "--codec", "express"], 2, "invalid choice"),
    (["stats", "--url", "redis://127.0.0.1:1/0?connect_timeout=0.2", "--codec", "connect"], 1, "unavailable"),
    (["rm", "--url", "file:///tmp/x", GOOD, "0" * 16], 2, "live in Redis"),
]


@pytest.mark.parametrize(("argv", "code", "says"), HOSTILE)
def test_hostile_arguments_get_one_line(argv: list[str], code: int, says: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    positional = argv[0] in ("show", "rm", "verify-cookie")
    got, out, err = run(capsys, *argv[:-1], "--", argv[-1]) if positional else run(capsys, *argv)
    assert got == code
    said = out if argv[0] == "verify-cookie" and code == 4 else err
    assert says in said
    assert "Traceback" not in err and err.count("\n") <= 1
    assert "D" * 32 not in err + out  # never echoes what may be a session id


def test_a_key_that_is_not_utf8_is_listed_printably_and_removed(redis_url: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    client = redis.Redis.from_url(redis_url)
    client.set(b"sess:\xff\xfeid", b'{"cookie":{"originalMaxAge":null,"expires":null},"user":"x"}', ex=600)
    listed = run_json(capsys, "ls", "--url", redis_url, "--codec", "connect", "--show-ids")
    assert [item["stored_name"] for item in listed] == ["\\xff\\xfeid"] and "unreadable" not in listed[0]
    code, out, err = run(capsys, "ls", "--url", redis_url, "--codec", "connect", "--show-ids")
    assert code == 0 and err == "" and "\\xff\\xfeid" in out
    assert run_json(capsys, "rm", "--url", redis_url, "--codec", "connect", listed[0]["id_hash"]) == [
        {"id_hash": listed[0]["id_hash"], "removed": True}]
    assert client.dbsize() == 0
    client.close()


def test_a_cookie_value_needs_the_keys(redis_url: str, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEYS_ENV)
    for argv in (["show", "--url", redis_url], ["rm", "--url", redis_url], ["verify-cookie"]):
        code, out, err = run(capsys, *argv, "--", GOOD)
        assert code == 2 and out == "" and KEYS_ENV in err and err.count("\n") == 1


def test_a_real_process_on_a_hostile_store_has_no_traceback(redis_url: str) -> None:
    log_in(redis_url, 1)
    client = redis.Redis.from_url(redis_url)
    client.set("sess:broken", b"\xff\xfe{", ex=60)
    client.hset("sess:other", "a", "b")
    client.close()
    script = Path(sys.executable).parent / "sessionkit"
    env = {**os.environ, KEYS_ENV: KEY, "SESSIONKIT_URL": redis_url, "SESSIONKIT_CODEC": "connect"}
    result = subprocess.run([str(script), "stats", "--json"], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 0 and result.stderr == ""
    report = json.loads(result.stdout)
    assert (report["sessions"], report["unreadable"], report["foreign"]) == (1, 1, 1)
    result = subprocess.run([str(script), "show", "broken"], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 1 and result.stdout == "" and result.stderr.count("\n") == 1
    assert "unreadable" in result.stderr and "Traceback" not in result.stderr


# -- with the real Express app --------------------------------------------------------------------


@pytest.fixture(scope="module")
def express(redis_server: RedisServer) -> Any:
    server = start_express(redis_server.url, [NEW, OLD], MAX_AGE_MS=str(DAY_MS))
    yield server
    server.stop()


def test_sessions_express_wrote_are_seen_shown_and_removed(express: Any, redis_url: str,
                                                           capsys: pytest.CaptureFixture[str],
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEYS_ENV, f"{NEW},{OLD}")
    monkeypatch.setenv("SESSIONKIT_CODEC", "connect")
    logins = [node(express, "POST", f"/login?user={user}") for user in ("ann", "bob", "cy")]
    cookies = [cookie_of(response) or "" for response in logins]
    ids = [response.json()["id"] for response in logins]
    node(express, "POST", "/set", cookies[0], json={"prefs": {"lang": "fr"}})
    report = run_json(capsys, "stats", "--url", redis_url)
    assert report["sessions"] == 3 and report["unreadable"] == 0 and report["foreign"] == 0
    listed = run_json(capsys, "ls", "--url", redis_url)
    assert sorted(item["id_hash"] for item in listed) == sorted(id_hash(raw) for raw in ids)
    shown = run_json(capsys, "show", "--url", redis_url, "--values", "--", cookies[0])
    assert shown["id_hash"] == id_hash(ids[0]) and shown["key"] == 1 and shown["max_age_ms"] == DAY_MS
    assert json.loads(shown["values"]["user"]) == "ann" and json.loads(shown["values"]["prefs"]) == {"lang": "fr"}
    verdict = run_json(capsys, "verify-cookie", "--", f"connect.sid={cookies[1]}")
    assert verdict["valid"] is True and verdict["id_hash"] == id_hash(ids[1])
    removed = run_json(capsys, "rm", "--url", redis_url, "--", cookies[0], id_hash(ids[1]))
    assert sorted(item["removed"] for item in removed) == [True, True]
    assert not node(express, "GET", "/session", cookies[0]).json()["hasUser"]
    assert not node(express, "GET", "/session", cookies[1]).json()["hasUser"]
    assert node(express, "GET", "/session", cookies[2]).json()["data"]["user"] == "cy"
    assert run_json(capsys, "stats", "--url", redis_url)["sessions"] == 1
