"""One-time enrollment URIs.

    portunus://HOST:PORT/enroll?v=1&secret=SECRET&fp=sha256:HEX

HOST:PORT is the server's control endpoint, SECRET a single-use random
secret (the server keeps only its SHA-256) and HEX the SHA-256 fingerprint of
the server's TLS certificate, which the client pins before sending anything.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import urllib.parse
from dataclasses import dataclass

from portunus.runtime import parse_host_port

# URI format history:
#   1  endpoint, secret, sha256 fingerprint
URI_VERSION = 1
SCHEME = "portunus"
# 32 random bytes: unguessable for the URI's whole (short) life.
SECRET_BYTES = 32


class EnrollmentUriError(ValueError):
    """A malformed enrollment URI."""


@dataclass(frozen=True)
class EnrollmentUri:
    endpoint: str          # HOST:PORT ([V6]:PORT)
    secret: str
    fingerprint: str       # lowercase hex SHA-256 of the server certificate (DER)

    def render(self) -> str:
        query = urllib.parse.urlencode({"v": URI_VERSION, "secret": self.secret, "fp": f"sha256:{self.fingerprint}"})
        return f"{SCHEME}://{self.endpoint}/enroll?{query}"


def new_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse_enrollment_uri(text: str) -> EnrollmentUri:
    """Parse and check an enrollment URI; EnrollmentUriError names what is wrong."""
    u = urllib.parse.urlsplit(text.strip())
    if u.scheme != SCHEME:
        raise EnrollmentUriError(f"not an enrollment URI (expected {SCHEME}://HOST:PORT/enroll?...), got {text!r}")
    if u.path != "/enroll":
        raise EnrollmentUriError(f"enrollment URI path must be /enroll, got {u.path!r}")
    try:
        parse_host_port(u.netloc, "enrollment URI endpoint")
    except ValueError as e:
        raise EnrollmentUriError(str(e)) from None
    q = urllib.parse.parse_qs(u.query)
    version = q.get("v", ["?"])[0]
    if version != str(URI_VERSION):
        raise EnrollmentUriError(f"enrollment URI version {version!r} not supported (this client reads {URI_VERSION})")
    secret = q.get("secret", [""])[0]
    if not secret:
        raise EnrollmentUriError("enrollment URI has no secret")
    fp = q.get("fp", [""])[0]
    m = re.fullmatch(r"sha256:([0-9a-fA-F]{64})", fp)
    if not m:
        raise EnrollmentUriError(f"enrollment URI fingerprint must be sha256:<64 hex digits>, got {fp!r}")
    return EnrollmentUri(u.netloc, secret, m.group(1).lower())
