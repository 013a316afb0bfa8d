"""Ed25519 signatures over canonical JSON.

A signed document travels as {"payload": "<canonical JSON text>",
"signature": "<base64>"}: the exact signed bytes are carried as a string, so
no re-serialisation on the receiving side can change what is verified. A
context prefix keeps a signature made for one purpose (a rule set) from being
accepted for another (a session login).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

RULESET_CONTEXT = b"portunus-ruleset-v1\0"
SESSION_CONTEXT = b"portunus-session-v1\0"


class SignatureError(Exception):
    """A signed document that does not verify or is malformed."""


def canonical_json(obj: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 kept: one text per value."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def sign_document(key: Ed25519PrivateKey, payload: dict[str, Any], context: bytes = RULESET_CONTEXT) -> dict[str, str]:
    text = canonical_json(payload)
    sig = key.sign(context + text.encode())
    return {"payload": text, "signature": base64.b64encode(sig).decode()}


def verify_document(key: Ed25519PublicKey, signed: Any, context: bytes = RULESET_CONTEXT) -> dict[str, Any]:
    """The payload of a signed document; SignatureError if anything is off."""
    if not isinstance(signed, dict) or not isinstance(signed.get("payload"), str) \
            or not isinstance(signed.get("signature"), str):
        raise SignatureError("malformed signed document (need string payload and signature)")
    try:
        sig = base64.b64decode(signed["signature"], validate=True)
    except (binascii.Error, ValueError) as e:
        raise SignatureError(f"signature is not base64: {e}") from e
    try:
        key.verify(sig, context + signed["payload"].encode())
    except InvalidSignature:
        raise SignatureError("bad signature (not signed by this server's key, or altered)") from None
    try:
        payload = json.loads(signed["payload"])
    except ValueError as e:
        raise SignatureError(f"signed payload is not JSON: {e}") from e
    if not isinstance(payload, dict):
        raise SignatureError("signed payload is not a JSON object")
    return payload


def sign_bytes(key: Ed25519PrivateKey, data: bytes, context: bytes) -> str:
    return base64.b64encode(key.sign(context + data)).decode()


def verify_bytes(key: Ed25519PublicKey, data: bytes, signature_b64: str, context: bytes) -> bool:
    try:
        key.verify(base64.b64decode(signature_b64, validate=True), context + data)
        return True
    except (InvalidSignature, binascii.Error, ValueError):
        return False
