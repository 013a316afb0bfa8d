"""Operator roles and what each may do.

    viewer    read everything except tokens (rules, clients, audit log)
    operator  viewer + enroll clients, create/change/delete rules, set owner limits
    admin     operator + create, list and revoke API tokens

`server.toml`'s operator_token is an admin token that cannot be revoked
(rotate it by editing the file and restarting). Further tokens are created by
an admin with POST /v1/tokens; only their SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

ROLES = ("admin", "operator", "viewer")

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
    """Who is calling: `actor` names them in the audit log."""

    actor: str
    role: str

    def may(self, permission: str) -> bool:
        return permission in _GRANTS.get(self.role, frozenset())


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def same_token(given: str, expected: str) -> bool:
    """Constant-time comparison (of hashes, so lengths leak nothing either)."""
    return hmac.compare_digest(token_hash(given), token_hash(expected))
