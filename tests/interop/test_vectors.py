"""sessionkit's connect codec against vectors made by the real npm packages (node/make-vectors.js,
output committed as vectors.json): no Node needed to run these.

- cookie values signed by cookie-signature and encoded by `cookie` are what sessionkit signs;
- what express-session reads out of a Cookie header (first pair wins, quotes, percent-decoding,
  forged and malformed values) is what sessionkit reads;
- documents connect-redis wrote parse, write back byte for byte, and get the TTL connect-redis gave them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from sessionkit.documents import (
    DEFAULT_TTL,
    build_document,
    document_ttl,
    iso_date,
    new_cookie,
    parse_document,
    parse_iso_date,
    touched_cookie,
)
from sessionkit.express import ConnectCookieCodec, ConnectSigner

VECTORS: dict[str, Any] = json.loads((Path(__file__).parent / "vectors.json").read_text("utf-8"))
DOCUMENTS = [vector for vector in VECTORS["documents"] if vector["document"] is not None]


def test_the_vectors_come_from_the_pinned_packages() -> None:
    lock = json.loads((Path(__file__).resolve().parents[2] / "node" / "package-lock.json").read_text("utf-8"))
    for name, version in VECTORS["versions"].items():
        assert lock["packages"][f"node_modules/{name}"]["version"] == version


@pytest.mark.parametrize("vector", VECTORS["signatures"], ids=lambda v: f"{v['secret'][:4]}-{v['id'][:12]}")
def test_sessionkit_signs_as_cookie_signature_and_cookie_do(vector: dict[str, str]) -> None:
    signer = ConnectSigner([vector["secret"].encode("utf-8")])
    name, _, value = vector["header"].partition("=")
    assert name == "connect.sid"
    assert signer.sign(vector["id"]) == value
    assert signer.unsign(vector["signed"]) == (vector["id"], 0)


@pytest.mark.parametrize("vector", VECTORS["reads"], ids=lambda v: v["header"][:48])
def test_sessionkit_reads_a_cookie_header_as_express_session_does(vector: dict[str, Any]) -> None:
    codec = ConnectCookieCodec([secret.encode("utf-8") for secret in vector["secrets"]])
    incoming = codec.read(vector["header"])
    assert incoming.session_id == vector["id"]
    if vector["id"] is not None:
        assert incoming.stale_key == (vector["id"] == "oldOldOld")


@pytest.mark.parametrize("vector", DOCUMENTS, ids=lambda v: v["name"])
def test_connect_redis_documents_parse_and_write_back_byte_for_byte(vector: dict[str, Any]) -> None:
    raw = vector["document"].encode("utf-8")
    document = parse_document(raw)
    expected = json.loads(raw)
    assert document.cookie == expected.pop("cookie")
    assert document.values == expected
    assert list(document.members) == list(expected)
    assert build_document(document.cookie, document.members) == raw


@pytest.mark.parametrize("vector", [v for v in DOCUMENTS if "touchedExpires" not in v], ids=lambda v: v["name"])
def test_sessionkit_computes_the_ttl_connect_redis_set(vector: dict[str, Any]) -> None:
    document = parse_document(vector["document"].encode("utf-8"))
    default = vector["storeOptions"].get("ttl", DEFAULT_TTL)
    set_ttl = math.ceil(vector["pttl"] / 1000)  # read back at once: at most a few ms have passed
    assert document_ttl(document.cookie, vector["now"] / 1000, default) == set_ttl


def test_connect_redis_deletes_a_session_with_no_time_left() -> None:
    (vector,) = [vector for vector in VECTORS["documents"] if vector["name"] == "no time left"]
    assert vector["document"] is None and vector["pttl"] == -2
    now = vector["now"] / 1000
    cookie = new_cookie(vector["options"]["maxAge"] / 1000, now, path="/", domain=None, secure=None,
                        httponly=True, samesite=None, partitioned=False)
    assert document_ttl(cookie, now, DEFAULT_TTL) <= 0  # so sessionkit deletes it too


@pytest.mark.parametrize("vector", [v for v in DOCUMENTS if v["name"] in
                                    ("one hour", "browser session", "every attribute", "secure auto, resolved")],
                         ids=lambda v: v["name"])
def test_a_new_cookie_object_is_the_one_express_session_makes(vector: dict[str, Any]) -> None:
    options = vector["options"]
    node_cookie = parse_document(vector["document"].encode("utf-8")).cookie
    max_age = options.get("maxAge")
    cookie = new_cookie(None if max_age is None else max_age / 1000, vector["cookieMadeAt"] / 1000,
                        path=options.get("path", "/"), domain=options.get("domain"), secure=options.get("secure"),
                        httponly=options.get("httpOnly", True), samesite=options.get("sameSite"),
                        partitioned=options.get("partitioned", False))
    if "priority" in options:  # an express-session option sessionkit does not set; it keeps it when Node did
        cookie = {**cookie, "priority": options["priority"]}
        cookie = {key: cookie[key] for key in node_cookie}
    assert list(cookie) == list(node_cookie)
    assert {k: v for k, v in cookie.items() if k != "expires"} == {
        k: v for k, v in node_cookie.items() if k != "expires"}
    if node_cookie["expires"] is None:
        assert cookie["expires"] is None
    else:
        assert abs((parse_iso_date(cookie["expires"]) or 0) - (parse_iso_date(node_cookie["expires"]) or 0)) <= 5


def test_connect_redis_touch_leaves_expires_stale_and_sessionkit_touch_does_not() -> None:
    before, after = (next(v for v in VECTORS["documents"] if v["name"] == name)
                     for name in ("touched by connect-redis", "after connect-redis touch"))
    # connect-redis renewed the TTL from the touched cookie but kept the stored expires as it was.
    assert after["document"] == before["document"]
    stale = parse_document(after["document"].encode("utf-8")).cookie
    assert stale["expires"] != after["touchedExpires"]
    assert after["now"] - before["now"] >= 1000
    # sessionkit's touch writes the expires the TTL follows.
    touched = touched_cookie(stale, after["now"] / 1000)
    assert abs((parse_iso_date(touched["expires"]) or 0) - (parse_iso_date(after["touchedExpires"]) or 0)) <= 5
    assert document_ttl(touched, after["now"] / 1000, DEFAULT_TTL) == math.ceil(after["pttl"] / 1000)


def test_iso_dates_round_trip_as_javascript_writes_them() -> None:
    for vector in DOCUMENTS:
        expires = json.loads(vector["document"])["cookie"]["expires"]
        if expires is not None:
            assert iso_date(parse_iso_date(expires) or 0) == expires
