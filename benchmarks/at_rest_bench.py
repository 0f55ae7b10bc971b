"""What hashed store names and ``?encrypt=1`` cost, next to the work they cannot avoid.

Two tables, each from interleaved rounds in shuffled order (this machine's
speed swings by ±50 %, so every row of a round runs within moments of the
others, and verdicts are ratios of same-round numbers, medians over rounds):

**Keys.** A session's key was ``prefix + id``; it is now ``prefix +
stored_name(id)`` (a SHA-256 in hex). Rows: building each key alone, then a
real round trip with each key: Redis (sessionkit's published
``LOAD_AND_TOUCH`` script through redis-py) and memcached (``gets`` through
pymemcache), the two differing only in the key, timed op by op in alternation
(raw, hashed, raw, hashed ...; which goes first drawn per round), so the
machine's drift falls on both alike. Verdict: the hashed key's added µs per
round trip, as a share of the round trip.

**Encryption.** A typical session (six keys, ~1 KiB of JSON values) through the
store protocol on ``memory://`` (no I/O, so nothing hides the sealing cost),
with and without ``?encrypt=1``: a load of one session again and again (its
sealed bytes remembered from the last open, the common case of a returning
browser), a cold load (twice as many sessions in turn as a sealer remembers:
every value opened), a merge of one changed key (one value sealed), a create
(every value sealed). Next to each, the AES-256-GCM calls the scheme makes,
made directly with ``cryptography`` for the same sizes, with a cipher made
once: one call per value, a counter nonce per seal as the store uses (and,
for reference, with an ``os.urandom`` nonce, as cryptography's documentation
shows), and for the cold loads the same calls on as many sessions' values in
turn (so as much memory is read). Verdict: per round, (``encrypt=1`` -
plain) ÷ raw calls, median ≤ 1.0. Two rows seal the same way as file and
memcache do (ASCII framing), on the same memory store. Two more rows measure
the alternative the store did not take: one AES-GCM call over the whole
encoded record (the stores that keep a JSON blob encode and decode it anyway)
instead of one per value. It saves calls on a load, but a merge would then
have to read, open, merge, seal and compare-and-swap the whole record: Redis
would lose its one-script per-key merge, and every write would seal the whole
session instead of one value.

Run: ``python -m benchmarks.at_rest_bench [--rounds 15] [--ops 2000] [--json PATH]``
(needs ``redis-server`` and ``memcached`` on PATH for the key round trips).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sessionkit import open_store
from sessionkit.backends.memory import MemoryStore
from sessionkit.backends.redis.layout import LOAD_AND_TOUCH
from sessionkit.backends.sealed import SealedStore
from sessionkit.naming import stored_name
from sessionkit.record import Record, encode_record
from sessionkit.sealing import REMEMBERED_SESSIONS

__all__ = ["main"]

#: A session as an app keeps one: ids, names, a list, a token, a cart (JSON values, as the serializer writes).
PAYLOAD = {
    "user_id": b"184467",
    "name": b'"Alice Example"',
    "roles": b'["admin","billing","support"]',
    "csrf": b'"' + secrets.token_urlsafe(32).encode() + b'"',
    "cart": json.dumps([{"sku": f"SKU-{n:05d}", "qty": n % 3 + 1, "price": 19.99} for n in range(12)]).encode(),
    "prefs": b'{"theme":"dark","lang":"en-GB","tz":"Europe/London"}',
}
CHANGE = {"csrf": b'"' + secrets.token_urlsafe(32).encode() + b'"'}
SECRET = "b" * 32
#: Sessions loaded in turn for the cold rows: twice as many as a sealer remembers, so every value is opened.
COLD_SESSIONS = 2 * REMEMBERED_SESSIONS


@dataclass
class Row:
    name: str
    op: Callable[[], object]
    samples: list[float] = field(default_factory=list)  # µs per op, one per round
    #: A row timed op by op, alternating with this one (A, B, A, B ...): drift between them cancels.
    paired: Row | None = None


def _time(op: Callable[[], object], ops: int) -> float:
    started = time.perf_counter()
    for _ in range(ops):
        op()
    return (time.perf_counter() - started) / ops * 1e6


def _time_pair(first: Callable[[], object], second: Callable[[], object], ops: int) -> tuple[float, float]:
    clock = time.perf_counter
    a = b = 0.0
    for _ in range(ops):
        started = clock()
        first()
        middle = clock()
        second()
        a, b = a + middle - started, b + clock() - middle
    return a / ops * 1e6, b / ops * 1e6


def measure(rows: list[Row], rounds: int, ops: int, rng: random.Random) -> None:
    for row in rows:  # warm up
        _time(row.op, max(1, ops // 10))
    partners = {id(row.paired) for row in rows if row.paired is not None}
    for _ in range(rounds):
        order = [row for row in rows if id(row) not in partners]
        rng.shuffle(order)
        for row in order:
            if row.paired is None:
                row.samples.append(_time(row.op, ops))
                continue
            flip = rng.random() < 0.5  # which of the two goes first in each pair, per round
            first, second = (row.paired, row) if flip else (row, row.paired)
            one, two = _time_pair(first.op, second.op, ops)
            first.samples.append(one)
            second.samples.append(two)


def _median(values: list[float]) -> float:
    return statistics.median(values)


def _per_round(a: Row, b: Row) -> list[float]:
    return [x - y for x, y in zip(a.samples, b.samples, strict=True)]


def table(rows: list[Row], header: str) -> str:
    lines = [f"| {header} | median µs/op | min µs/op |", "|---|---:|---:|"]
    lines += [f"| {row.name} | {_median(row.samples):.2f} | {min(row.samples):.2f} |" for row in rows]
    return "\n".join(lines)


# -- keys ----------------------------------------------------------------------------------


@contextmanager
def servers() -> Iterator[tuple[Any, Any]]:
    from testservers import MemcachedServer, RedisServer

    redis_server, memcached = RedisServer(), MemcachedServer()
    redis_server.start()
    memcached.start()
    try:
        yield redis_server, memcached
    finally:
        redis_server.stop()
        memcached.stop()


def key_rows(redis_server: Any, memcached: Any) -> tuple[list[Row], dict[str, Any]]:
    import redis
    from pymemcache.client.base import Client

    session_id = secrets.token_urlsafe(32)
    prefix = b"session:"
    client = redis.Redis(host=redis_server.host, port=redis_server.port)
    sha = client.script_load(LOAD_AND_TOUCH)
    record = {b"m:c": b"1800000000.0", b"m:a": b"1800000000.0", **{b"d:" + k.encode(): v for k, v in PAYLOAD.items()}}
    for key in (prefix + session_id.encode(), prefix + stored_name(session_id).encode()):
        client.hset(key, mapping=record)
    cache = Client((memcached.host, memcached.port), default_noreply=False, no_delay=True)
    blob = encode_record(Record(PAYLOAD, 1.8e9, 1.8e9))
    for text in ("session:" + session_id, "session:" + stored_name(session_id)):
        cache.set(text, blob, expire=3600)

    def raw_key() -> bytes:
        return prefix + session_id.encode("utf-8")

    def hashed_key() -> bytes:
        return prefix + stored_name(session_id).encode("ascii")

    def redis_load(make_key: Callable[[], bytes]) -> Callable[[], object]:
        def op() -> object:
            reply = client.evalsha(sha, 1, make_key(), 86_400_000)
            assert reply
            return reply
        return op

    def memcache_load(make_key: Callable[[], bytes]) -> Callable[[], object]:
        def op() -> object:
            reply = cache.gets(make_key().decode("ascii"))
            assert reply[0] is not None
            return reply
        return op

    redis_hashed = Row("redis load, hashed key", redis_load(hashed_key))
    memcache_hashed = Row("memcached gets, hashed key", memcache_load(hashed_key))
    rows = [
        Row("key: prefix + id (before)", raw_key),
        Row("key: prefix + stored_name(id)", hashed_key),
        Row("redis load, raw key", redis_load(raw_key), paired=redis_hashed), redis_hashed,
        Row("memcached gets, raw key", memcache_load(raw_key), paired=memcache_hashed), memcache_hashed,
    ]
    return rows, {"redis": client, "memcache": cache}


def key_verdict(rows: list[Row]) -> list[str]:
    by = {row.name: row for row in rows}
    out = []
    build = _median(_per_round(by["key: prefix + stored_name(id)"], by["key: prefix + id (before)"]))
    out.append(f"building the hashed key adds {build:.2f} µs (median over rounds)")
    for store, raw, hashed in (("redis", "redis load, raw key", "redis load, hashed key"),
                               ("memcached", "memcached gets, raw key", "memcached gets, hashed key")):
        added = _per_round(by[hashed], by[raw])
        share = [a / b for a, b in zip(added, by[raw].samples, strict=True)]
        spread = statistics.pstdev(by[raw].samples) / _median(by[raw].samples)
        out.append(f"{store} round trip: hashed - raw = {_median(added):+.2f} µs "
                   f"({_median(share):+.1%} of the round trip; the raw row's own spread over rounds: ±{spread:.1%})")
    return out


# -- encryption ----------------------------------------------------------------------------


def encryption_rows() -> list[Row]:
    session_id = secrets.token_urlsafe(32)
    plain = open_store("memory://")
    sealed = open_store("memory://?encrypt=1")
    sealed.bind_keys([SECRET.encode()])  # type: ignore[attr-defined]
    # The same memory store, sealing the way a store that writes JSON records (file, memcache) does.
    text = SealedStore(MemoryStore(max_entries=2 * COLD_SESSIONS))
    text.bind_keys([SECRET.encode()])
    record = Record(PAYLOAD, 1.8e9, 1.8e9)
    for store in (plain, sealed, text):
        store.create(session_id, record, 3600)
    # Cold loads: more sessions than a sealer remembers values of, loaded in turn.
    many = [secrets.token_urlsafe(32) for _ in range(COLD_SESSIONS)]
    for other in many:
        for store in (plain, sealed, text):
            store.create(other, record, 3600)
    name = stored_name(session_id).encode()
    aead = AESGCM(os.urandom(32))
    boxes = {key: (nonce := os.urandom(12), aead.encrypt(nonce, value, name + key.encode()))
             for key, value in PAYLOAD.items()}
    blob = encode_record(record)
    whole_nonce = os.urandom(12)
    whole = aead.encrypt(whole_nonce, blob, name)

    def load(store: Any) -> Callable[[], object]:
        def op() -> object:
            loaded = store.load(session_id, 3600)
            assert loaded is not None and len(loaded.data) == len(PAYLOAD)
            return loaded
        return op

    def load_in_turn(store: Any) -> Callable[[], object]:
        turn = itertools.cycle(many)

        def op() -> object:
            loaded = store.load(next(turn), 3600)
            assert loaded is not None and len(loaded.data) == len(PAYLOAD)
            return loaded
        return op

    def merge(store: Any) -> Callable[[], object]:
        return lambda: store.merge(session_id, CHANGE, 1.8e9, 3600)

    def create(store: Any) -> Callable[[], object]:
        return lambda: store.create(session_id, record, 3600)

    def raw_open_each() -> object:
        return {key: aead.decrypt(nonce, box, name + key.encode()) for key, (nonce, box) in boxes.items()}

    # The same calls on as many sessions' values in turn as the cold loads open (so as much memory to read).
    names = [stored_name(other).encode() for other in many]
    cold_boxes = itertools.cycle([
        (other, {key: (nonce := os.urandom(12), aead.encrypt(nonce, value, other + key.encode()))
                 for key, value in PAYLOAD.items()}) for other in names])

    def raw_open_each_in_turn() -> object:
        other, sealed = next(cold_boxes)
        return {key: aead.decrypt(nonce, box, other + key.encode()) for key, (nonce, box) in sealed.items()}

    counter = itertools.count()

    def raw_seal_one() -> object:
        nonce = next(counter).to_bytes(12, "big")
        return aead.encrypt(nonce, CHANGE["csrf"], name + b"csrf")

    def raw_seal_each() -> object:
        return {key: aead.encrypt(next(counter).to_bytes(12, "big"), value, name + key.encode())
                for key, value in PAYLOAD.items()}

    def raw_seal_one_random() -> object:
        return aead.encrypt(os.urandom(12), CHANGE["csrf"], name + b"csrf")

    def raw_seal_each_random() -> object:
        return {key: aead.encrypt(os.urandom(12), value, name + key.encode()) for key, value in PAYLOAD.items()}

    def raw_open_whole() -> object:
        return aead.decrypt(whole_nonce, whole, name)

    def raw_seal_whole() -> object:
        return aead.encrypt(os.urandom(12), blob, name)

    return [
        Row("load, plain", load(plain)), Row("load, encrypt=1", load(sealed)),
        Row("cold load, plain", load_in_turn(plain)), Row("cold load, encrypt=1", load_in_turn(sealed)),
        Row("raw AES-GCM: open 6 values", raw_open_each),
        Row(f"raw AES-GCM: open 6 values, {COLD_SESSIONS} sessions in turn", raw_open_each_in_turn),
        Row("merge 1 key, plain", merge(plain)), Row("merge 1 key, encrypt=1", merge(sealed)),
        Row("raw AES-GCM: seal 1 value", raw_seal_one),
        Row("raw AES-GCM: seal 1 value, os.urandom nonce", raw_seal_one_random),
        Row("create, plain", create(plain)), Row("create, encrypt=1", create(sealed)),
        Row("raw AES-GCM: seal 6 values", raw_seal_each),
        Row("raw AES-GCM: seal 6 values, os.urandom nonce", raw_seal_each_random),
        Row("cold load, encrypt=1, ASCII framing (file, memcache)", load_in_turn(text)),
        Row("create, encrypt=1, ASCII framing (file, memcache)", create(text)),
        Row("alternative, raw AES-GCM: open the whole record blob", raw_open_whole),
        Row("alternative, raw AES-GCM: seal the whole record blob", raw_seal_whole),
    ]


#: The target: what encrypt=1 adds is at most the AES-GCM calls it makes.
TARGET = 1.0


def encryption_verdict(rows: list[Row]) -> list[str]:
    by = {row.name: row for row in rows}
    out = []
    for what, raw, textbook in (
        ("load", "raw AES-GCM: open 6 values", None),
        ("cold load", f"raw AES-GCM: open 6 values, {COLD_SESSIONS} sessions in turn", "raw AES-GCM: open 6 values"),
        ("merge 1 key", "raw AES-GCM: seal 1 value", "raw AES-GCM: seal 1 value, os.urandom nonce"),
        ("create", "raw AES-GCM: seal 6 values", "raw AES-GCM: seal 6 values, os.urandom nonce"),
    ):
        added = _per_round(by[f"{what}, encrypt=1"], by[f"{what}, plain"])
        ratio = _median([a / b for a, b in zip(added, by[raw].samples, strict=True)])
        verdict = "MET" if ratio <= TARGET else "NOT MET"
        line = (f"{what}: encrypt=1 adds {_median(added):.2f} µs; raw AES-GCM {_median(by[raw].samples):.2f} µs; "
                f"ratio {ratio:.2f} (≤ {TARGET}: {verdict})")
        if textbook is not None:
            other = _median([a / b for a, b in zip(added, by[textbook].samples, strict=True)])
            line += (f"; against the same calls on one session's values again and again: {other:.2f}"
                     if what == "cold load" else f"; against the same calls with an os.urandom nonce each: {other:.2f}")
        out.append(line)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    enc = encryption_rows()
    measure(enc, args.rounds, args.ops, rng)
    with servers() as (redis_server, memcached):
        keys, clients = key_rows(redis_server, memcached)
        try:
            measure(keys, args.rounds, max(1, args.ops // 4), rng)
        finally:
            clients["redis"].close()
            clients["memcache"].close()
    print(f"# at-rest benchmark: {args.rounds} rounds, python {sys.version.split()[0]}\n")
    print(table(keys, "keys"))
    print()
    for line in key_verdict(keys):
        print("- " + line)
    print()
    print(table(enc, "encryption (memory://, 6 keys, ~1 KiB)"))
    print()
    for line in encryption_verdict(enc):
        print("- " + line)
    if args.json is not None:
        args.json.write_text(json.dumps({row.name: row.samples for row in keys + enc}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
