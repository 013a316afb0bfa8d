"""Who is calling and what they may do: users' roles, and each token's scope.

A caller is a user (role superadmin or user) acting through a login session
(full scope) or a bearer token whose scope narrows what the user may:

    viewer    read only
    operator  viewer + change things (rules, enrollments, owner limits, ...)
    admin     operator + administer tokens (and, for a superadmin, users)

A superadmin sees and changes everything; a user sees and changes only the
rules they own, and creates rules only inside their grants (see `grants`).
`server.toml`'s operator_token is the superadmin root with admin scope and
cannot be revoked (rotate it by editing the file and restarting). Tokens are
created with POST /v1/tokens; only their SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

ROLES = ("admin", "operator", "viewer")  # token scopes (the pre-users "roles")
USER_ROLES = ("superadmin", "user")
SUPERADMIN = "superadmin"

READ = "read"
WRITE = "write"
ADMIN = "admin"

_GRANTS = {
    "viewer": frozenset({READ}),
    "operator": frozenset({READ, WRITE}),
    "admin": frozenset({READ, WRITE, ADMIN}),
}

# 32 random bytes, URL-safe base64 (43 characters).
TOKEN_BYTES = 32


@dataclass(frozen=True)
class Principal:
    """Who is calling: `actor` names them in the audit log, `role` is the token scope."""

    actor: str
    role: str
    user_id: int | None = None
    username: str = "root"
    user_role: str = SUPERADMIN
    via: str = "token"  # token | session (cookie: mutations need a same-origin request)

    def may(self, permission: str) -> bool:
        return permission in _GRANTS.get(self.role, frozenset())

    @property
    def superadmin(self) -> bool:
        return self.user_role == SUPERADMIN

    @property
    def audit_role(self) -> str:
        """The role written to the audit log: the user's role, and a narrower token scope if any."""
        return self.user_role if self.role == "admin" else f"{self.user_role}/{self.role}"


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_token(given: str, expected: str) -> bool:
    """Constant-time comparison (of hashes, so lengths leak nothing either)."""
    return hmac.compare_digest(token_hash(given), token_hash(expected))
