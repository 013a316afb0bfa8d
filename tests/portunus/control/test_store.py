"""state.db: schema + migrations, the data-dir lock, tmpfs refusal, one-time secrets."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from portunus.control.store import SCHEMA_VERSION, DataDirLocked, StoreError, open_store


@pytest.fixture
def data_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="portunus-store-", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_fresh_db_wal_schema_and_persistence(data_dir: Path) -> None:
    s = open_store(data_dir)
    assert s.schema_version == SCHEMA_VERSION
    assert s.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    c = s.create_client("edge", "10.0.0.1")
    r = s.add_rule(c.id, "web", {"name": "web", "listen_port": 80, "target": "h:1"})
    s.set_owner(c.id, "team", {"bandwidth_in_bps": 5})
    assert s.bump_version(c.id) == 1
    s.add_audit("me", "admin", "rule.create", "rule 1", {"a": 1}, "ok")
    s.close()

    s = open_store(data_dir)
    try:
        assert s.client_by_name("edge").ruleset_version == 1
        assert s.rule(r.id).spec == {"name": "web", "listen_port": 80, "target": "h:1"}
        assert s.owners_for_client(c.id) == {"team": {"bandwidth_in_bps": 5}}
        (entry,) = s.list_audit()
        assert (entry.actor, entry.action, entry.detail, entry.result) == ("me", "rule.create", {"a": 1}, "ok")
    finally:
        s.close()


def test_second_open_is_refused_until_the_first_closes(data_dir: Path) -> None:
    first = open_store(data_dir)
    try:
        with pytest.raises(DataDirLocked, match=r"another portunus-server \(pid \d+\) is already using"):
            open_store(data_dir)
    finally:
        first.close()
    open_store(data_dir).close()


def test_newer_schema_is_refused(data_dir: Path) -> None:
    open_store(data_dir).close()
    db = sqlite3.connect(data_dir / "state.db")
    db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match=f"schema version {SCHEMA_VERSION + 1} is newer"):
        open_store(data_dir)


def test_tmpfs_and_missing_dirs_are_refused() -> None:
    d = Path(tempfile.mkdtemp(prefix="portunus-store-", dir="/dev/shm"))
    try:
        with pytest.raises(StoreError, match="is on tmpfs .* persistent disk"):
            open_store(d)
        assert not (d / "state.db").exists()
    finally:
        shutil.rmtree(d)
    with pytest.raises(StoreError, match="does not exist"):
        open_store("/tmp/portunus-no-such-dir-here")


def test_enrollment_secret_single_use_and_expiry(data_dir: Path) -> None:
    s = open_store(data_dir)
    try:
        c = s.create_client("edge", "h")
        s.add_enrollment(c.id, "hash-1", 60, "op")
        s.add_enrollment(c.id, "hash-2", -1, "op")
        client, why = s.consume_enrollment("hash-1", "pubkey")
        assert client is not None and client.public_key == "pubkey" and why == ""
        assert s.consume_enrollment("hash-1", "other")[1].startswith("enrollment URI already used")
        assert s.consume_enrollment("hash-2", "other")[1].startswith("enrollment URI expired")
        assert s.consume_enrollment("nope", "other")[1].startswith("unknown enrollment secret")
        assert s.client_by_id(c.id).public_key == "pubkey"
    finally:
        s.close()
