"""Users, login sessions, grants and the traffic-quota ledger in state.db (schema 3).

Schema 3 (MIGRATION_3) replaces "three global token roles" with users:

* `users`: username, role (superadmin | user), argon2 password hash (NULL:
  no password login). The migration creates the superadmin `root` (id 1,
  no password) and gives it every existing token and rule, so a token keeps
  exactly what its role allowed: its role is now the token's *scope*
  (viewer: read only; operator: no user or token administration; admin:
  everything its user may). Set root's password with
  `portunus-server users passwd root` to log in as root.
* `sessions`: cookie sessions (SHA-256 of the cookie only), with an expiry.
* `grants`: (user, client name or "*", listen port range, protocols).
* `quotas`: the ledger, one row per (user, client): budget, period, the
  current period's start and the bytes used in it (from the client's reports).
* `rules.user_id`: who owns a rule; `audit.reason` / `audit.user_id`: why a
  request was denied and for whom it was written (a user reads their own).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from portunus.config import QuotaSpec

if TYPE_CHECKING:
    import sqlite3

    from portunus.control.store import Store

ROOT_USER_ID = 1
ROOT_USERNAME = "root"

MIGRATION_3: tuple[str, ...] = (
    """CREATE TABLE users (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        username TEXT NOT NULL UNIQUE,
        role TEXT NOT NULL,
        password_hash TEXT,
        created_at REAL NOT NULL,
        created_by TEXT NOT NULL
    )""",
    f"""INSERT INTO users (id, username, role, password_hash, created_at, created_by)
        VALUES ({ROOT_USER_ID}, '{ROOT_USERNAME}', 'superadmin', NULL, CAST(strftime('%s', 'now') AS REAL),
                'schema migration 3')""",
    "ALTER TABLE tokens ADD COLUMN user_id INTEGER REFERENCES users(id)",
    f"UPDATE tokens SET user_id = {ROOT_USER_ID}",
    "ALTER TABLE rules ADD COLUMN user_id INTEGER REFERENCES users(id)",
    f"UPDATE rules SET user_id = {ROOT_USER_ID}",
    "CREATE INDEX rules_by_user ON rules (user_id)",
    """CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        session_sha256 TEXT NOT NULL UNIQUE,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        peer TEXT
    )""",
    """CREATE TABLE grants (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        client TEXT NOT NULL,
        port_start INTEGER NOT NULL,
        port_end INTEGER NOT NULL,
        protocols TEXT NOT NULL,
        created_at REAL NOT NULL,
        created_by TEXT NOT NULL
    )""",
    """CREATE TABLE quotas (
        user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        client_id INTEGER NOT NULL REFERENCES clients(id) ON DELETE CASCADE,
        limit_bytes INTEGER NOT NULL,
        period TEXT NOT NULL,
        reset_day INTEGER NOT NULL,
        period_start REAL NOT NULL,
        used_bytes INTEGER NOT NULL DEFAULT 0,
        exhausted_at REAL,
        reported_at REAL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (user_id, client_id)
    )""",
    "ALTER TABLE audit ADD COLUMN reason TEXT",
    "ALTER TABLE audit ADD COLUMN user_id INTEGER",
)


@dataclass(frozen=True)
class UserRow:
    id: int
    username: str
    role: str
    has_password: bool
    created_at: float
    created_by: str


@dataclass(frozen=True)
class GrantRow:
    id: int
    user_id: int
    username: str
    client: str
    port_start: int
    port_end: int
    protocols: tuple[str, ...]
    created_at: float
    created_by: str


@dataclass(frozen=True)
class QuotaRow:
    user_id: int
    username: str
    client_id: int
    client: str
    spec: QuotaSpec
    period_start: float
    used_bytes: int
    exhausted_at: float | None
    reported_at: float | None

    @property
    def owner(self) -> str:
        return owner_name(self.username)


def owner_name(username: str) -> str:
    """The data-plane owner every rule of a user runs under (its quota and shared limits)."""
    return f"user:{username}"


class TenantStore:
    """Typed access to the schema-3 tables of a Store (same thread rules as the Store)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.db: sqlite3.Connection = store.db

    # -------------------------------------------------------------- users

    def add_user(self, username: str, role: str, password_hash: str | None, created_by: str) -> UserRow:
        with self.store.transaction() as db:
            cur = db.execute("INSERT INTO users (username, role, password_hash, created_at, created_by) "
                             "VALUES (?, ?, ?, ?, ?)", (username, role, password_hash, time.time(), created_by))
            row_id = cur.lastrowid
        assert row_id is not None
        user = self.user(row_id)
        assert user is not None
        return user

    def user(self, user_id: int) -> UserRow | None:
        row = self.db.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone()
        return _user(row) if row else None

    def user_by_name(self, username: str) -> UserRow | None:
        row = self.db.execute("SELECT * FROM users WHERE username = ?", (username,)).fetchone()
        return _user(row) if row else None

    def list_users(self) -> list[UserRow]:
        return [_user(r) for r in self.db.execute("SELECT * FROM users ORDER BY id")]

    def password_hash(self, user_id: int) -> str | None:
        row = self.db.execute("SELECT password_hash FROM users WHERE id = ?", (user_id,)).fetchone()
        return row[0] if row else None

    def set_password_hash(self, user_id: int, password_hash: str) -> None:
        with self.store.transaction() as db:
            db.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id))

    def delete_user(self, user_id: int) -> None:
        """Remove a user, their sessions, grants, quotas, and revoke their tokens (rows kept for the audit)."""
        with self.store.transaction() as db:
            db.execute("UPDATE tokens SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL",
                       (time.time(), user_id))
            db.execute("UPDATE tokens SET user_id = NULL WHERE user_id = ?", (user_id,))
            db.execute("DELETE FROM users WHERE id = ?", (user_id,))

    def rule_count(self, user_id: int) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM rules WHERE user_id = ?", (user_id,)).fetchone()[0])

    # -------------------------------------------------------------- sessions

    def add_session(self, user_id: int, session_sha256: str, ttl_s: float, peer: str) -> None:
        now = time.time()
        with self.store.transaction() as db:
            db.execute("DELETE FROM sessions WHERE expires_at < ?", (now,))
            db.execute("INSERT INTO sessions (user_id, session_sha256, created_at, expires_at, peer) "
                       "VALUES (?, ?, ?, ?, ?)", (user_id, session_sha256, now, now + ttl_s, peer))

    def session_user(self, session_sha256: str) -> UserRow | None:
        row = self.db.execute("SELECT u.* FROM sessions s JOIN users u ON u.id = s.user_id "
                              "WHERE s.session_sha256 = ? AND s.expires_at >= ?",
                              (session_sha256, time.time())).fetchone()
        return _user(row) if row else None

    def delete_session(self, session_sha256: str) -> None:
        with self.store.transaction() as db:
            db.execute("DELETE FROM sessions WHERE session_sha256 = ?", (session_sha256,))

    # -------------------------------------------------------------- grants

    def add_grant(self, user_id: int, client: str, port_start: int, port_end: int,
                  protocols: tuple[str, ...], created_by: str) -> GrantRow:
        with self.store.transaction() as db:
            cur = db.execute("INSERT INTO grants (user_id, client, port_start, port_end, protocols, created_at, "
                             "created_by) VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (user_id, client, port_start, port_end, ",".join(protocols), time.time(), created_by))
            row_id = cur.lastrowid
        grant = self.grant(int(row_id or 0))
        assert grant is not None
        return grant

    def grant(self, grant_id: int) -> GrantRow | None:
        row = self.db.execute(_GRANT_SELECT + " WHERE g.id = ?", (grant_id,)).fetchone()
        return _grant(row) if row else None

    def grants(self, user_id: int | None = None) -> list[GrantRow]:
        if user_id is None:
            return [_grant(r) for r in self.db.execute(_GRANT_SELECT + " ORDER BY g.id")]
        return [_grant(r) for r in self.db.execute(_GRANT_SELECT + " WHERE g.user_id = ? ORDER BY g.id",
                                                   (user_id,))]

    def delete_grant(self, grant_id: int) -> None:
        with self.store.transaction() as db:
            db.execute("DELETE FROM grants WHERE id = ?", (grant_id,))

    # -------------------------------------------------------------- quotas (the ledger)

    def set_quota(self, user_id: int, client_id: int, spec: QuotaSpec, period_start: float) -> None:
        """Create or change a quota; a change keeps the used count (never a way to reset usage)."""
        now = time.time()
        with self.store.transaction() as db:
            db.execute("INSERT INTO quotas (user_id, client_id, limit_bytes, period, reset_day, period_start, "
                       "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (user_id, client_id) DO UPDATE SET "
                       "limit_bytes = excluded.limit_bytes, period = excluded.period, "
                       "reset_day = excluded.reset_day, updated_at = excluded.updated_at, "
                       "exhausted_at = CASE WHEN used_bytes >= excluded.limit_bytes THEN exhausted_at END",
                       (user_id, client_id, spec.bytes, spec.period, spec.reset_day, period_start, now))

    def quota(self, user_id: int, client_id: int) -> QuotaRow | None:
        row = self.db.execute(_QUOTA_SELECT + " WHERE q.user_id = ? AND q.client_id = ?",
                              (user_id, client_id)).fetchone()
        return _quota(row) if row else None

    def quotas(self, client_id: int | None = None) -> list[QuotaRow]:
        if client_id is None:
            return [_quota(r) for r in self.db.execute(_QUOTA_SELECT + " ORDER BY q.user_id, q.client_id")]
        return [_quota(r) for r in self.db.execute(_QUOTA_SELECT + " WHERE q.client_id = ? ORDER BY q.user_id",
                                                   (client_id,))]

    def delete_quota(self, user_id: int, client_id: int) -> None:
        with self.store.transaction() as db:
            db.execute("DELETE FROM quotas WHERE user_id = ? AND client_id = ?", (user_id, client_id))

    def record_usage(self, user_id: int, client_id: int, period_start: float, used_bytes: int,
                     exhausted_at: float | None, reported_at: float | None) -> None:
        with self.store.transaction() as db:
            db.execute("UPDATE quotas SET period_start = ?, used_bytes = ?, exhausted_at = ?, "
                       "reported_at = COALESCE(?, reported_at), updated_at = ? WHERE user_id = ? AND client_id = ?",
                       (period_start, used_bytes, exhausted_at, reported_at, time.time(), user_id, client_id))


_GRANT_SELECT = "SELECT g.*, u.username AS username FROM grants g JOIN users u ON u.id = g.user_id"
_QUOTA_SELECT = ("SELECT q.*, u.username AS username, c.name AS client_name FROM quotas q "
                 "JOIN users u ON u.id = q.user_id JOIN clients c ON c.id = q.client_id")


def _user(r: sqlite3.Row) -> UserRow:
    return UserRow(r["id"], r["username"], r["role"], r["password_hash"] is not None, r["created_at"],
                   r["created_by"])


def _grant(r: sqlite3.Row) -> GrantRow:
    return GrantRow(r["id"], r["user_id"], r["username"], r["client"], r["port_start"], r["port_end"],
                    tuple(r["protocols"].split(",")), r["created_at"], r["created_by"])


def _quota(r: sqlite3.Row) -> QuotaRow:
    return QuotaRow(r["user_id"], r["username"], r["client_id"], r["client_name"],
                    QuotaSpec(r["limit_bytes"], r["period"], r["reset_day"]), r["period_start"], r["used_bytes"],
                    r["exhausted_at"], r["reported_at"])


def render_user(u: UserRow, iso: Any) -> dict[str, Any]:
    return {"id": u.id, "username": u.username, "role": u.role, "has_password": u.has_password,
            "created_at": iso(u.created_at), "created_by": u.created_by}
