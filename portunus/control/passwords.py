"""Password hashing for operator users: argon2id (argon2-cffi), verified off the event loop by the caller.

argon2-cffi's defaults (RFC 9106's second recommendation: 64 MiB, 3 passes,
4 lanes) cost tens of milliseconds per hash: cheap for one login, expensive
for a guessing script, which the login throttle (tenants_api) slows further.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from portunus.bounds import show

# NIST SP 800-63B asks for at least 8; an operator account guards a fleet: 12.
MIN_PASSWORD_CHARS = 12
# argon2 hashes any length, but a 1 MiB "password" is a cheap way to burn CPU.
MAX_PASSWORD_CHARS = 1024

_HASHER = PasswordHasher()
# Verified against when the username is unknown, so a miss costs what a wrong password costs
# (the answer time does not tell which usernames exist).
_DUMMY_HASH = _HASHER.hash("portunus-no-such-user-dummy-password")


def password_problem(password: object) -> str | None:
    """Why `password` cannot be set, or None."""
    if not isinstance(password, str):
        return f"password must be a string, got {show(password)}"
    if not MIN_PASSWORD_CHARS <= len(password) <= MAX_PASSWORD_CHARS:
        return f"password must be {MIN_PASSWORD_CHARS} to {MAX_PASSWORD_CHARS} characters (got {len(password)})"
    return None


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    """True if `password` matches; a user without a hash (or none at all) never matches, at the same cost."""
    try:
        return _HASHER.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False
