"""The server's state: `D/state.db` (SQLite, WAL) behind a file lock.

Clients, rules, owners' limits, enrollment secrets (SHA-256 only), operator
tokens (SHA-256 only) and the audit log all live here, so they survive a
restart and a kill -9 (WAL with synchronous=FULL: a committed change is on
disk before the API answers).

One server per data dir: `D/state.lock` is flock()ed for the life of the
process (the kernel drops it when the process dies, even on kill -9). A
tmpfs/ramfs-backed data dir is refused, because the state would vanish at
reboot while clients still hold bundles that point at it.

Only the server's event-loop thread touches a Store.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from portunus.control.files import PRIVATE_MODE, make_private
from portunus.control.mounts import volatile_mount
from portunus.control.tenants_db import MIGRATION_3

# Schema history:
#   1  clients, enrollments, owners, rules, tokens, audit, meta(schema_version)
#   2  enrollments.revoked_at / revoked_by: one-time URIs can be revoked (and a
#      newer URI for the same client supersedes an outstanding one)
#   3  users, sessions, grants, quotas (the traffic ledger); tokens and rules belong to a
#      user (existing ones to the superadmin "root"); audit.reason / audit.user_id
#      (see tenants_db)
SCHEMA_VERSION = 3

_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE clients (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            address TEXT NOT NULL,
            public_key TEXT,
            created_at REAL NOT NULL,
            enrolled_at REAL,
            last_seen_at REAL,
            ruleset_version INTEGER NOT NULL DEFAULT 0
        )""",
        """CREATE TABLE enrollments (
            id INTEGER PRIMARY KEY,
            client_id INTEGER NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
            secret_sha256 TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL,
            used_at REAL,
            created_by TEXT NOT NULL
        )""",
        """CREATE TABLE owners (
            client_id INTEGER NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            rate_limit_json TEXT NOT NULL,
            PRIMARY KEY (client_id, name)
        )""",
        """CREATE TABLE rules (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            client_id INTEGER NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            spec_json TEXT NOT NULL,
            status TEXT NOT NULL DEFAULT 'pending',
            status_reason TEXT,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            UNIQUE (client_id, name)
        )""",
        """CREATE TABLE tokens (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            role TEXT NOT NULL,
            token_sha256 TEXT NOT NULL UNIQUE,
            created_at REAL NOT NULL,
            created_by TEXT NOT NULL,
            revoked_at REAL
        )""",
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            ts REAL NOT NULL,
            actor TEXT NOT NULL,
            role TEXT,
            action TEXT NOT NULL,
            target TEXT,
            detail_json TEXT,
            result TEXT NOT NULL
        )""",
    ),
    2: (
        "ALTER TABLE enrollments ADD COLUMN revoked_at REAL",
        "ALTER TABLE enrollments ADD COLUMN revoked_by TEXT",
    ),
    3: MIGRATION_3,
}

LOCK_NAME = "state.lock"
DB_NAME = "state.db"


class StoreError(Exception):
    """The data dir cannot be used (tmpfs, newer schema, unreadable, locked)."""


class DataDirLocked(StoreError):
    """Another portunus-server holds the data dir's lock."""


# ------------------------------------------------------------------ rows


@dataclass(frozen=True)
class ClientRow:
    id: int
    name: str
    address: str
    public_key: str | None
    created_at: float
    enrolled_at: float | None
    last_seen_at: float | None
    ruleset_version: int


@dataclass(frozen=True)
class RuleRow:
    id: int
    client_id: int
    client: str
    name: str
    spec: dict[str, Any]
    status: str
    status_reason: str | None
    created_at: float
    updated_at: float
    user_id: int | None = None  # the owner (schema 3); None only for a rule whose user was deleted


@dataclass(frozen=True)
class EnrollmentRow:
    """A one-time enrollment URI as stored (its secret only as a SHA-256)."""

    id: int
    client: str
    created_at: float
    expires_at: float
    created_by: str
    used_at: float | None
    revoked_at: float | None
    revoked_by: str | None

    def status(self, now: float) -> str:
        """used | revoked | expired | outstanding."""
        if self.used_at is not None:
            return "used"
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.expires_at < now else "outstanding"


@dataclass(frozen=True)
class TokenRow:
    id: int
    name: str
    role: str  # the token's scope: viewer | operator | admin (rbac)
    created_at: float
    created_by: str
    revoked_at: float | None
    user_id: int | None = None


@dataclass(frozen=True)
class AuditEntry:
    id: int
    ts: float
    actor: str
    role: str | None
    action: str
    target: str | None
    detail: dict[str, Any] | None
    result: str
    reason: str | None = None


# ------------------------------------------------------------------ lock


def _acquire_lock(data_dir: Path) -> int:
    path = data_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        finally:
            os.close(fd)
        raise DataDirLocked(f"{data_dir}: another portunus-server (pid {holder}) is already using this data "
                         f"dir (lock {path} is held); stop it first or use another --data-dir") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


# ------------------------------------------------------------------ store


class Store:
    """Typed access to state.db; open with `open_store`, end with `close`."""

    def __init__(self, data_dir: Path, db: sqlite3.Connection, lock_fd: int) -> None:
        self.data_dir = data_dir
        self.db = db
        self._lock_fd = lock_fd

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error); nests as a no-op."""
        if self.db.in_transaction:
            yield self.db
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @property
    def schema_version(self) -> int:
        return _schema_version(self.db)

    # -------------------------------------------------------------- clients

    def create_client(self, name: str, address: str) -> ClientRow:
        with self.transaction() as db:
            cur = db.execute("INSERT INTO clients (name, address, created_at) VALUES (?, ?, ?)",
                             (name, address, time.time()))
            row_id = cur.lastrowid
        assert row_id is not None
        client = self.client_by_id(row_id)
        assert client is not None
        return client

    def client_by_name(self, name: str) -> ClientRow | None:
        row = self.db.execute("SELECT * FROM clients WHERE name = ?", (name,)).fetchone()
        return _client(row) if row else None

    def client_by_id(self, client_id: int) -> ClientRow | None:
        row = self.db.execute("SELECT * FROM clients WHERE id = ?", (client_id,)).fetchone()
        return _client(row) if row else None

    def list_clients(self, *, after_id: int = 0, limit: int = -1) -> list[ClientRow]:
        """Clients by id, those after `after_id`, at most `limit` (-1: all)."""
        rows = self.db.execute("SELECT * FROM clients WHERE id > ? ORDER BY id LIMIT ?", (after_id, limit))
        return [_client(r) for r in rows]

    def touch_client(self, client_id: int) -> None:
        self.touch_clients({client_id: time.time()})

    def touch_clients(self, seen: dict[int, float]) -> None:
        """Set last_seen_at of many clients in one transaction: {client id: time}."""
        with self.transaction() as db:
            db.executemany("UPDATE clients SET last_seen_at = ? WHERE id = ?", [(t, c) for c, t in seen.items()])

    def bump_version(self, client_id: int) -> int:
        """Raise the client's rule-set version by one (inside the caller's transaction)."""
        with self.transaction() as db:
            db.execute("UPDATE clients SET ruleset_version = ruleset_version + 1 WHERE id = ?", (client_id,))
            (v,) = db.execute("SELECT ruleset_version FROM clients WHERE id = ?", (client_id,)).fetchone()
        return int(v)

    # -------------------------------------------------------------- enrollments

    def add_enrollment(self, client_id: int, secret_sha256: str, ttl_s: float, created_by: str) -> tuple[int, int]:
        """Store a new one-time secret for the client: (its id, how many outstanding ones it superseded).

        A client has at most one outstanding URI: a new one revokes the older
        ones, so a URI that leaked or was sent twice cannot be redeemed later.
        """
        now = time.time()
        with self.transaction() as db:
            superseded = db.execute("UPDATE enrollments SET revoked_at = ?, revoked_by = ? WHERE client_id = ? "
                                    "AND used_at IS NULL AND revoked_at IS NULL",
                                    (now, f"superseded by a newer URI ({created_by})", client_id)).rowcount
            cur = db.execute("INSERT INTO enrollments (client_id, secret_sha256, created_at, expires_at, created_by) "
                             "VALUES (?, ?, ?, ?, ?)", (client_id, secret_sha256, now, now + ttl_s, created_by))
            row_id = cur.lastrowid
        assert row_id is not None
        return row_id, superseded

    def consume_enrollment(self, secret_sha256: str, public_key: str) -> tuple[ClientRow | None, str]:
        """Use a one-time secret: (client, "") on success, else (None, why it was refused).

        The check and the use are one transaction, so two clients racing with
        the same URI (or two URIs of one client) cannot both win, and a client
        that holds a key keeps it: no URI replaces an enrolled client's key.
        """
        now = time.time()
        with self.transaction() as db:
            row = db.execute("SELECT e.id, e.client_id, e.expires_at, e.used_at, e.revoked_at, e.revoked_by, "
                             "c.public_key FROM enrollments e JOIN clients c ON c.id = e.client_id "
                             "WHERE e.secret_sha256 = ?", (secret_sha256,)).fetchone()
            if row is None:
                return None, "unknown enrollment secret (was the URI copied whole?)"
            if row["used_at"] is not None:
                return None, "enrollment URI already used (URIs are single-use; ask an operator for a new one)"
            if row["revoked_at"] is not None:
                return None, f"enrollment URI revoked ({row['revoked_by']}); ask an operator for a new one"
            if row["expires_at"] < now:
                return None, "enrollment URI expired (ask an operator for a new one)"
            if row["public_key"] is not None:
                return None, "this client is already enrolled; its key is not replaced by another URI"
            db.execute("UPDATE enrollments SET used_at = ? WHERE id = ?", (now, row["id"]))
            db.execute("UPDATE enrollments SET revoked_at = ?, revoked_by = ? WHERE client_id = ? AND id != ? "
                       "AND used_at IS NULL AND revoked_at IS NULL",
                       (now, "client enrolled with another URI", row["client_id"], row["id"]))
            db.execute("UPDATE clients SET public_key = ?, enrolled_at = ? WHERE id = ?",
                       (public_key, now, row["client_id"]))
        client = self.client_by_id(row["client_id"])
        return client, ""

    def enrollment(self, enrollment_id: int) -> EnrollmentRow | None:
        row = self.db.execute(_ENROLLMENT_SELECT + " WHERE e.id = ?", (enrollment_id,)).fetchone()
        return _enrollment(row) if row else None

    def list_enrollments(self, *, client_id: int | None = None, after_id: int = 0,
                         limit: int = -1) -> list[EnrollmentRow]:
        """Enrollments by id (of one client if `client_id`), those after `after_id`, at most `limit` (-1: all)."""
        where, args = _page_where("e", client_id, after_id)
        rows = self.db.execute(_ENROLLMENT_SELECT + f" {where} ORDER BY e.id LIMIT ?", (*args, limit))
        return [_enrollment(r) for r in rows]

    def revoke_enrollment(self, enrollment_id: int, revoked_by: str) -> bool:
        """Revoke an unused, unrevoked URI; False if it was used or revoked already."""
        with self.transaction() as db:
            n = db.execute("UPDATE enrollments SET revoked_at = ?, revoked_by = ? WHERE id = ? "
                           "AND used_at IS NULL AND revoked_at IS NULL",
                           (time.time(), f"revoked by {revoked_by}", enrollment_id)).rowcount
        return n == 1

    # -------------------------------------------------------------- owners

    def set_owner(self, client_id: int, name: str, rate_limit: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO owners (client_id, name, rate_limit_json) VALUES (?, ?, ?) "
                       "ON CONFLICT (client_id, name) DO UPDATE SET rate_limit_json = excluded.rate_limit_json",
                       (client_id, name, json.dumps(rate_limit, sort_keys=True)))

    def owners_for_client(self, client_id: int) -> dict[str, dict[str, Any]]:
        rows = self.db.execute("SELECT name, rate_limit_json FROM owners WHERE client_id = ? ORDER BY name",
                               (client_id,))
        return {r["name"]: json.loads(r["rate_limit_json"]) for r in rows}

    # -------------------------------------------------------------- rules

    def add_rule(self, client_id: int, name: str, spec: dict[str, Any], user_id: int | None = None) -> RuleRow:
        now = time.time()
        with self.transaction() as db:
            cur = db.execute("INSERT INTO rules (client_id, name, spec_json, created_at, updated_at, user_id) "
                             "VALUES (?, ?, ?, ?, ?, ?)",
                             (client_id, name, json.dumps(spec, sort_keys=True), now, now, user_id))
            row_id = cur.lastrowid
        assert row_id is not None
        rule = self.rule(row_id)
        assert rule is not None
        return rule

    def replace_rule(self, rule_id: int, name: str, spec: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute("UPDATE rules SET name = ?, spec_json = ?, status = 'pending', status_reason = NULL, "
                       "updated_at = ? WHERE id = ?", (name, json.dumps(spec, sort_keys=True), time.time(), rule_id))

    def delete_rule(self, rule_id: int) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM rules WHERE id = ?", (rule_id,))

    def rule(self, rule_id: int) -> RuleRow | None:
        row = self.db.execute(_RULE_SELECT + " WHERE r.id = ?", (rule_id,)).fetchone()
        return _rule(row) if row else None

    def rule_by_name(self, client_id: int, name: str) -> RuleRow | None:
        row = self.db.execute(_RULE_SELECT + " WHERE r.client_id = ? AND r.name = ?", (client_id, name)).fetchone()
        return _rule(row) if row else None

    def rules_for_client(self, client_id: int) -> list[RuleRow]:
        return [_rule(r) for r in self.db.execute(_RULE_SELECT + " WHERE r.client_id = ? ORDER BY r.id",
                                                  (client_id,))]

    def list_rules(self, *, client_id: int | None = None, after_id: int = 0, limit: int = -1) -> list[RuleRow]:
        """Rules by id (of one client if `client_id`), those after `after_id`, at most `limit` (-1: all)."""
        where, args = _page_where("r", client_id, after_id)
        rows = self.db.execute(_RULE_SELECT + f" {where} ORDER BY r.id LIMIT ?", (*args, limit))
        return [_rule(r) for r in rows]

    def rule_status_counts(self, client_id: int) -> dict[str, int]:
        """{status: number of rules} of one client (counted in SQLite: no rule is decoded)."""
        rows = self.db.execute("SELECT status, COUNT(*) AS n FROM rules WHERE client_id = ? GROUP BY status",
                               (client_id,))
        return {r["status"]: r["n"] for r in rows}

    def set_rule_statuses(self, client_id: int, results: dict[str, str | None]) -> None:
        """Record a client's ack: {rule name: None (active) or failure reason}.

        Only rows whose status changes are written: the ack of a full set
        after a reconnect names every rule, and mostly nothing changed.
        """
        now = time.time()
        with self.transaction() as db:
            db.executemany("UPDATE rules SET status = ?, status_reason = ?, updated_at = ? "
                           "WHERE client_id = ? AND name = ? AND (status != ? OR status_reason IS NOT ?)",
                           [("active" if reason is None else "failed", reason, now, client_id, name,
                             "active" if reason is None else "failed", reason)
                            for name, reason in results.items()])

    # -------------------------------------------------------------- tokens

    def add_token(self, name: str, role: str, token_sha256: str, created_by: str,
                  user_id: int | None = None) -> TokenRow:
        with self.transaction() as db:
            cur = db.execute("INSERT INTO tokens (name, role, token_sha256, created_at, created_by, user_id) "
                             "VALUES (?, ?, ?, ?, ?, ?)",
                             (name, role, token_sha256, time.time(), created_by, user_id))
            row_id = cur.lastrowid
        row = self.db.execute("SELECT * FROM tokens WHERE id = ?", (row_id,)).fetchone()
        return _token(row)

    def token_by_hash(self, token_sha256: str) -> TokenRow | None:
        row = self.db.execute("SELECT * FROM tokens WHERE token_sha256 = ? AND revoked_at IS NULL",
                              (token_sha256,)).fetchone()
        return _token(row) if row else None

    def token_by_id(self, token_id: int) -> TokenRow | None:
        row = self.db.execute("SELECT * FROM tokens WHERE id = ?", (token_id,)).fetchone()
        return _token(row) if row else None

    def list_tokens(self) -> list[TokenRow]:
        return [_token(r) for r in self.db.execute("SELECT * FROM tokens ORDER BY id")]

    def revoke_token(self, token_id: int) -> None:
        with self.transaction() as db:
            db.execute("UPDATE tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                       (time.time(), token_id))

    # -------------------------------------------------------------- audit

    def add_audit(self, actor: str, role: str | None, action: str, target: str | None,
                  detail: dict[str, Any] | None, result: str, *, reason: str | None = None,
                  user_id: int | None = None) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO audit (ts, actor, role, action, target, detail_json, result, reason, user_id) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (time.time(), actor, role, action, target,
                        json.dumps(detail, sort_keys=True) if detail is not None else None, result, reason,
                        user_id))

    def prune_audit(self, actor_prefix: str, keep: int) -> int:
        """Delete all but the newest `keep` entries whose actor starts with `actor_prefix`; return how many."""
        pattern = _like_escape(actor_prefix) + "%"
        with self.transaction() as db:
            row = db.execute("SELECT id FROM audit WHERE actor LIKE ? ESCAPE '\\' ORDER BY id DESC "
                             "LIMIT 1 OFFSET ?", (pattern, keep)).fetchone()
            if row is None:
                return 0
            return db.execute("DELETE FROM audit WHERE actor LIKE ? ESCAPE '\\' AND id <= ?",
                              (pattern, row["id"])).rowcount

    def list_audit(self, *, limit: int = 100, after_id: int = 0, user_id: int | None = None,
                   before_id: int | None = None, action: str | None = None, actor: str | None = None,
                   result: str | None = None, text: str | None = None) -> list[AuditEntry]:
        """Newest first; `user_id`: only the entries written for that user; `before_id` pages back;
        `action`, `actor`: exact; `result`: prefix ("ok", "denied", "error"); `text`: in target or
        detail, ignoring ASCII case."""
        where: list[str] = ["id > ?"]
        args: list[int | str] = [after_id]
        for column, value in (("user_id", user_id), ("action", action), ("actor", actor)):
            if value is not None:
                where.append(f"{column} = ?")
                args.append(value)
        if before_id is not None:
            where.append("id < ?")
            args.append(before_id)
        if result is not None:
            where.append("result LIKE ? ESCAPE '\\'")
            args.append(_like_escape(result) + "%")
        if text is not None:
            where.append("(target LIKE ? ESCAPE '\\' OR detail_json LIKE ? ESCAPE '\\')")
            args += [f"%{_like_escape(text)}%"] * 2
        rows = self.db.execute(f"SELECT * FROM audit WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?",
                               (*args, limit))
        return [AuditEntry(r["id"], r["ts"], r["actor"], r["role"], r["action"], r["target"],
                           json.loads(r["detail_json"]) if r["detail_json"] else None, r["result"], r["reason"])
                for r in rows]


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _page_where(alias: str, client_id: int | None, after_id: int) -> tuple[str, tuple[int, ...]]:
    """The WHERE clause of one page: rows after `after_id`, of one client if `client_id` is given."""
    if client_id is None:
        return f"WHERE {alias}.id > ?", (after_id,)
    return f"WHERE {alias}.client_id = ? AND {alias}.id > ?", (client_id, after_id)


_RULE_SELECT = ("SELECT r.*, c.name AS client_name FROM rules r JOIN clients c ON c.id = r.client_id")
_ENROLLMENT_SELECT = ("SELECT e.*, c.name AS client_name FROM enrollments e JOIN clients c ON c.id = e.client_id")


def _enrollment(r: sqlite3.Row) -> EnrollmentRow:
    return EnrollmentRow(r["id"], r["client_name"], r["created_at"], r["expires_at"], r["created_by"], r["used_at"],
                         r["revoked_at"], r["revoked_by"])


def _client(r: sqlite3.Row) -> ClientRow:
    return ClientRow(r["id"], r["name"], r["address"], r["public_key"], r["created_at"], r["enrolled_at"],
                     r["last_seen_at"], r["ruleset_version"])


def _rule(r: sqlite3.Row) -> RuleRow:
    return RuleRow(r["id"], r["client_id"], r["client_name"], r["name"], json.loads(r["spec_json"]),
                   r["status"], r["status_reason"], r["created_at"], r["updated_at"], r["user_id"])


def _token(r: sqlite3.Row) -> TokenRow:
    return TokenRow(r["id"], r["name"], r["role"], r["created_at"], r["created_by"], r["revoked_at"],
                    r["user_id"])


def _schema_version(db: sqlite3.Connection) -> int:
    has_meta = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone()
    if not has_meta:
        return 0
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(db: sqlite3.Connection, path: Path) -> int:
    """Bring the schema up to SCHEMA_VERSION step by step; refuse a newer one."""
    current = _schema_version(db)
    if current > SCHEMA_VERSION:
        raise StoreError(f"{path}: schema version {current} is newer than this portunus-server supports "
                         f"({SCHEMA_VERSION}); run a newer portunus-server with this data dir")
    for version in range(current + 1, SCHEMA_VERSION + 1):
        db.execute("BEGIN IMMEDIATE")
        try:
            if version == 1:
                db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            for stmt in _MIGRATIONS[version]:
                db.execute(stmt)
            db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                       "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (str(version),))
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
    return SCHEMA_VERSION


def _refuse_emptied(data_dir: Path, path: Path) -> None:
    """A state.db that exists but is empty is a lost database, not a fresh install: refuse it.

    The one empty file that is harmless is the one a first start left when it
    died before writing anything; that start never got as far as the keys
    (tls/), and then there is nothing to lose.
    """
    if not path.exists() or path.stat().st_size > 0:
        return
    wal = path.with_name(f"{DB_NAME}-wal")
    if not (data_dir / "tls").exists() and not (wal.exists() and wal.stat().st_size > 0):
        return
    raise StoreError(f"{path}: is empty (0 bytes) in a data dir that has been used: starting on it would "
                     "silently drop every client, rule and token. Restore state.db from a backup; to really "
                     "start afresh, move the data dir's state.db* files away first")


def _refuse_foreign(db: sqlite3.Connection, path: Path) -> None:
    """A SQLite file with tables but none of ours is someone else's database: refuse to add ours to it."""
    if _schema_version(db) > 0:
        return
    tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
    if tables:
        shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        raise StoreError(f"{path}: not a portunus-server state database (it has tables {shown} and no "
                         "schema version); point --data-dir at the right directory or restore state.db")


def open_store(data_dir: str | Path) -> Store:
    """Lock `data_dir`, open (or create) state.db and migrate it; raise StoreError."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise StoreError(f"{data_dir}: data dir does not exist (create it and put server.toml in it)")
    mount = volatile_mount(data_dir)
    if mount is not None:
        raise StoreError(f"{data_dir}: is on {mount.fs_type} ({mount.mount_point}), so state.db would be lost at "
                         "reboot; use a data dir on persistent disk, e.g. --data-dir /var/lib/portunus "
                         "(if TMPDIR points at tmpfs, set TMPDIR=$HOME)")
    lock_fd = _acquire_lock(data_dir)
    path = data_dir / DB_NAME
    try:
        _refuse_emptied(data_dir, path)
        if not path.exists():
            # Created here, 0600, so SQLite's WAL and shm files (which copy the
            # database file's mode) are private too.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_MODE))
        for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", LOCK_NAME):
            make_private(data_dir / name)  # a data dir from an older server, or restored from a backup
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute("PRAGMA busy_timeout = 5000")
        mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{path}: cannot switch to WAL journal mode (got {mode})")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA foreign_keys = ON")
        _refuse_foreign(db, path)
        migrate(db, path)
    except sqlite3.DatabaseError as e:
        os.close(lock_fd)
        raise StoreError(f"{path}: cannot open state database: {e}") from e
    except BaseException:
        os.close(lock_fd)
        raise
    return Store(data_dir, db, lock_fd)
