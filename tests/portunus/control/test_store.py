"""state.db: schema + migrations, the data-dir lock, tmpfs refusal, one-time secrets."""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from portunus.control.store import (
    _MIGRATIONS,
    SCHEMA_VERSION,
    DataDirLocked,
    StoreError,
    open_store,
)
from portunus.control.tenants_db import ROOT_USER_ID, TenantStore


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
        c, late = s.create_client("edge", "h"), s.create_client("late", "h")
        s.add_enrollment(c.id, "hash-1", 60, "op")
        s.add_enrollment(late.id, "hash-2", -1, "op")
        client, why = s.consume_enrollment("hash-1", "pubkey")
        assert client is not None and client.public_key == "pubkey" and why == ""
        assert s.consume_enrollment("hash-1", "other")[1].startswith("enrollment URI already used")
        assert s.consume_enrollment("hash-2", "other")[1].startswith("enrollment URI expired")
        assert s.consume_enrollment("nope", "other")[1].startswith("unknown enrollment secret")
        assert s.client_by_id(c.id).public_key == "pubkey"
    finally:
        s.close()


def test_one_outstanding_uri_per_client_and_no_key_replacement(data_dir: Path) -> None:
    """Issue 15 item 2: a second URI for the same name must not replace an enrolled client's key."""
    s = open_store(data_dir)
    try:
        c = s.create_client("edge", "h")
        first, superseded = s.add_enrollment(c.id, "hash-1", 60, "op")
        assert superseded == 0
        second, superseded = s.add_enrollment(c.id, "hash-2", 60, "op")
        assert superseded == 1
        assert s.consume_enrollment("hash-1", "key-1") == (None, "enrollment URI revoked (superseded by a newer "
                                                            "URI (op)); ask an operator for a new one")
        client, why = s.consume_enrollment("hash-2", "key-2")
        assert client is not None and client.public_key == "key-2", why
        # A URI for an enrolled client (the API refuses to make one; an old server did) cannot take it over.
        third, _ = s.add_enrollment(c.id, "hash-3", 60, "op")
        assert s.consume_enrollment("hash-3", "key-3")[1].startswith("this client is already enrolled")
        assert s.client_by_id(c.id).public_key == "key-2"
        now = time.time()
        assert [(e.id, e.status(now)) for e in s.list_enrollments()] == [
            (first, "revoked"), (second, "used"), (third, "outstanding")]
        assert s.revoke_enrollment(third, "admin") and not s.revoke_enrollment(third, "admin")
        assert not s.revoke_enrollment(second, "admin")  # used: nothing left to revoke
        assert s.enrollment(third).revoked_by == "revoked by admin"
    finally:
        s.close()


def test_schema_1_is_upgraded_in_place(data_dir: Path) -> None:
    db = sqlite3.connect(data_dir / "state.db")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    for stmt in _MIGRATIONS[1]:
        db.execute(stmt)
    db.execute("INSERT INTO meta VALUES ('schema_version', '1')")
    db.execute("INSERT INTO clients (name, address, created_at) VALUES ('edge', 'h', 0)")
    db.execute("INSERT INTO enrollments (client_id, secret_sha256, created_at, expires_at, created_by) "
               "VALUES (1, 'hash-1', 0, 1e12, 'op')")
    db.commit()
    db.close()
    s = open_store(data_dir)
    try:
        assert s.schema_version == SCHEMA_VERSION == 3
        assert [e.status(time.time()) for e in s.list_enrollments()] == ["outstanding"]
        assert s.consume_enrollment("hash-1", "key")[0] is not None
    finally:
        s.close()


def test_schema_2_token_roles_migrate_to_users(data_dir: Path) -> None:
    """Schema 3: the superadmin root owns every existing token and rule; a token's role is kept as its scope."""
    db = sqlite3.connect(data_dir / "state.db")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    for version in (1, 2):
        for stmt in _MIGRATIONS[version]:
            db.execute(stmt)
    db.execute("INSERT INTO meta VALUES ('schema_version', '2')")
    db.execute("INSERT INTO clients (name, address, created_at) VALUES ('edge', 'h', 0)")
    db.execute("INSERT INTO rules (client_id, name, spec_json, created_at, updated_at) VALUES (1, 'r', '{}', 0, 0)")
    for i, role in enumerate(("admin", "operator", "viewer")):
        db.execute("INSERT INTO tokens (name, role, token_sha256, created_at, created_by) VALUES (?, ?, ?, 0, 'op')",
                   (f"t-{role}", role, f"hash-{i}"))
    db.execute("INSERT INTO audit (ts, actor, role, action, target, detail_json, result) "
               "VALUES (0, 'operator_token', 'admin', 'rule.create', NULL, NULL, 'ok')")
    db.commit()
    db.close()
    s = open_store(data_dir)
    try:
        assert s.schema_version == 3
        tenants = TenantStore(s)
        root = tenants.user(ROOT_USER_ID)
        assert root is not None and (root.username, root.role, root.has_password) == ("root", "superadmin", False)
        assert [(t.name, t.role, t.user_id) for t in s.list_tokens()] == [
            ("t-admin", "admin", ROOT_USER_ID), ("t-operator", "operator", ROOT_USER_ID),
            ("t-viewer", "viewer", ROOT_USER_ID)]
        assert [r.user_id for r in s.list_rules()] == [ROOT_USER_ID]
        assert s.list_audit()[0].reason is None
        # New rows of the schema-3 tables work at once.
        alice = tenants.add_user("alice", "user", "hash", "test")
        g = tenants.add_grant(alice.id, "edge", 20000, 20099, ("tcp",), "test")
        assert tenants.grants(alice.id) == [g] and g.protocols == ("tcp",)
    finally:
        s.close()


def test_audit_filters_and_paging(data_dir: Path) -> None:
    s = open_store(data_dir)
    try:
        s.add_audit("user:ann", "user", "rule.create", 'rule 1 "web"', {"target": "10.0.0.9:80"}, "ok", user_id=2)
        s.add_audit("user:ann", "user", "rule.create", None, {"target": "no-port"}, "error 400 invalid_rule: x",
                    user_id=2)
        s.add_audit("token:ci", "superadmin", "rule.delete", 'rule 1 "web"', None, "denied: not_owner: y")
        s.add_audit("user:bob", "user", "auth.login", "user bob", {"peer": "100%_sure"}, "ok", user_id=3)
        ids = [e.id for e in s.list_audit()]
        assert len(ids) == 4 and ids == sorted(ids, reverse=True)  # newest first

        def actions(**kw: object) -> list[str]:
            return [e.action for e in s.list_audit(**kw)]  # type: ignore[arg-type]

        assert actions(action="rule.create") == ["rule.create", "rule.create"]
        assert actions(actor="user:bob") == ["auth.login"]
        assert actions(actor="user") == []  # exact, not a prefix
        assert actions(result="error") == ["rule.create"] and actions(result="denied") == ["rule.delete"]
        assert actions(result="ok", action="rule.create") == ["rule.create"]
        assert actions(text="WEB") == ["rule.delete", "rule.create"]  # target, either case
        assert actions(text="no-port") == ["rule.create"]  # detail
        assert actions(text="100%_") == ["auth.login"] and actions(text="0%x") == []  # LIKE wildcards are literal
        assert actions(before_id=ids[1]) == ["rule.create", "rule.create"]  # pages back
        assert actions(before_id=ids[1], limit=1) == ["rule.create"]
        assert actions(user_id=2, result="error") == ["rule.create"]
    finally:
        s.close()
