from __future__ import annotations

import hashlib
import multiprocessing
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sessionkit import ConfigError, StoreError, open_store
from sessionkit.backends.file import FileStore
from sessionkit.backends.sealed import SealedStore
from sessionkit.flow import MergeResult
from sessionkit.record import CorruptRecord, Record

from .contract import SealedStoreContract, ServerStoreContract, sealed, sid


class SessionFiles:
    """The files of a file store's directory, read and damaged directly."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, session_id: str) -> Path:
        return self.directory / (hashlib.sha256(session_id.encode("utf-8")).hexdigest() + ".session")

    def plant(self, session_id: str, how: str) -> None:
        path = self.path(session_id)
        expires = path.stat().st_mtime
        blob = path.read_bytes()
        path.write_bytes({"binary": b"\xff\xfe\x00garbage", "truncated": blob[: len(blob) // 2],
                          "foreign-json": b'{"user":"alice"}', "empty": b""}[how])
        os.utime(path, (expires, expires))  # still live: unreadable, not expired

    def raw(self, session_id: str) -> bytes | None:
        try:
            return self.path(session_id).read_bytes()
        except FileNotFoundError:
            return None


class TestFileContract(ServerStoreContract):
    corruptions = ("binary", "truncated", "foreign-json", "empty")

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[FileStore]:
        store = open_store(f"file://{tmp_path}/sessions")
        yield store
        store.close()

    @pytest.fixture
    def stored_items(self, tmp_path: Path) -> SessionFiles:
        return SessionFiles(tmp_path / "sessions")


class TestFileSealedContract(SealedStoreContract, TestFileContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SealedStore]:
        store = sealed(open_store(f"file://{tmp_path}/sessions?encrypt=1"))
        yield store
        store.close()


def session_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.session"))


def test_file_name_is_a_hash_of_the_id_so_no_cookie_names_a_path(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    for hostile in ["../../etc/passwd", "/etc/passwd", "a/b", "..", "\x00", "x" * 5000]:
        store.create(hostile, Record({"a": b"1"}, 0.0, 0.0), 60)
    names = [path.name for path in session_files(tmp_path)]
    assert len(names) == 6
    assert all(len(name) == 64 + len(".session") for name in names)
    assert (tmp_path / (hashlib.sha256(b"..").hexdigest() + ".session")).exists()
    assert list(tmp_path.parent.glob("passwd")) == []


def test_expiry_is_the_files_mtime_and_touch_moves_it(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    before = time.time()
    store.create(sid(1), Record({"a": b"1"}, 0.0, 0.0), 100)
    (path,) = session_files(tmp_path)
    assert before + 99 <= path.stat().st_mtime <= time.time() + 101
    store.load(sid(1), touch_ttl=5000)
    assert path.stat().st_mtime >= before + 4999


def test_expired_file_is_removed_on_read(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.create(sid(1), Record({"a": b"1"}, 0.0, 0.0), 60)
    (path,) = session_files(tmp_path)
    os.utime(path, (time.time(), time.time() - 1))
    assert store.load(sid(1), None) is None
    assert not path.exists()


def test_purge_removes_expired_and_stale_temporary_files_only(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.create(sid(1), Record({"a": b"1"}, 0.0, 0.0), 60)
    store.create(sid(2), Record({"a": b"1"}, 0.0, 0.0), 60)
    live, dead = session_files(tmp_path)
    os.utime(dead, (0, time.time() - 10))
    fresh_temp = tmp_path / "abc.session.0123.tmp"
    fresh_temp.write_bytes(b"partial")
    old_now = time.time() + 3600
    assert FileStore(tmp_path, clock=time.time).purge() == 1
    assert live.exists() and not dead.exists() and fresh_temp.exists()
    assert FileStore(tmp_path, clock=lambda: old_now).purge() >= 1  # the temp file is stale an hour later
    assert not fresh_temp.exists()


def test_writes_are_atomic_no_temporary_files_left(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.create(sid(1), Record({"a": b"1"}, 0.0, 0.0), 60)
    for n in range(20):
        assert store.merge(sid(1), {"a": str(n).encode()}, 0.0, 60) is MergeResult.APPLIED
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []
    assert len(session_files(tmp_path)) == 1


def test_corrupt_file_raises_corrupt_record_on_load_and_merge_and_stays(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.create(sid(1), Record({"a": b"1"}, 0.0, 0.0), 60)
    (path,) = session_files(tmp_path)
    expires = path.stat().st_mtime
    for garbage in [b"", b"\xff\xfe\x00", b"{", b"[]", b'{"v":1}', b'{"v":1,"c":1,"a":1,"d":{"k":1}}',
                    b'{"v":1,"c":"x","a":1,"d":{}}', b'{"v":99,"c":1,"a":1,"d":{}}', b"9" * 100_000]:
        path.write_bytes(garbage)
        os.utime(path, (expires, expires))
        with pytest.raises(CorruptRecord):
            store.load(sid(1), None)
        with pytest.raises(CorruptRecord):
            store.merge(sid(1), {"a": b"2"}, 0.0, 60)
        assert path.read_bytes() == garbage and path.stat().st_mtime == expires  # neither removed nor rewritten
    store.delete(sid(1))
    assert not path.exists()


def test_directory_that_is_a_file_is_a_store_error_at_write(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "s")
    (tmp_path / "s").rename(tmp_path / "moved")
    (tmp_path / "s").write_text("not a directory")
    with pytest.raises(StoreError):
        store.create(sid(1), Record({"a": b"1"}, 0.0, 0.0), 60)
    with pytest.raises(StoreError):
        store.load(sid(1), None)


def _merge_many(directory: str, worker: int, count: int) -> None:
    store = FileStore(directory)
    for i in range(count):
        result = store.merge(sid(1), {f"p{worker}-{i}": b"1"}, 0.0, 60)
        assert result is MergeResult.APPLIED


def test_processes_sharing_the_directory_lose_no_update(tmp_path: Path) -> None:
    FileStore(tmp_path).create(sid(1), Record({"seed": b"0"}, 0.0, 0.0), 60)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_merge_many, args=(str(tmp_path), w, 40)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    loaded = FileStore(tmp_path).load(sid(1), None)
    assert loaded is not None
    assert len(loaded.data) == 1 + 4 * 40


def test_fork_gets_its_own_lock_files(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.create(sid(1), Record({"seed": b"0"}, 0.0, 0.0), 60)
    store.merge(sid(1), {"parent": b"1"}, 0.0, 60)  # opens lock files before the fork
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_merge_via, args=(store, w)) for w in range(3)]
    for worker in workers:
        worker.start()
    _merge_via(store, 99)
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    loaded = store.load(sid(1), None)
    assert loaded is not None and len(loaded.data) == 2 + 4 * 30


def _merge_via(store: FileStore, worker: int) -> None:
    for i in range(30):
        assert store.merge(sid(1), {f"f{worker}-{i}": b"1"}, 0.0, 60) is MergeResult.APPLIED


@pytest.mark.parametrize(
    "url",
    ["file://", "file:///", "file://otherhost/tmp/x", "file:///tmp/x?fsync=maybe", "file:///tmp/x?colour=red",
     "file:///tmp/x%00y"],
)
def test_bad_file_urls_are_config_errors(url: str) -> None:
    with pytest.raises(ConfigError):
        open_store(url)


def test_file_url_options(tmp_path: Path) -> None:
    store = open_store(f"file://localhost{tmp_path}?fsync=1")
    assert isinstance(store, FileStore) and store.fsync and store.directory == tmp_path
