"""CSRF tokens for cookie sessions: derived from the session cookie, echoed in a request header.

The session cookie is HttpOnly, so a page cannot read it; the server hands
the page this token (login answer, GET /v1/auth/session) and every change
made with the cookie must send it back in `X-CSRF-Token`. Another site can
make a browser send the cookie but can neither read the token nor compute
it (an HMAC keyed by the 256-bit cookie), so its forged request is refused.
This is on top of the Origin check (tenants_api), for browsers or proxies
that drop Origin.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-CSRF-Token"
_LABEL = b"portunus csrf v1"


def token_for(cookie: str) -> str:
    """The CSRF token of the session whose cookie value is `cookie`."""
    return hmac.new(cookie.encode(), _LABEL, hashlib.sha256).hexdigest()


def token_matches(cookie: str, given: str | None) -> bool:
    """Constant-time check of a request's token against its session cookie."""
    return given is not None and hmac.compare_digest(token_for(cookie).encode(), given.encode(errors="replace"))
