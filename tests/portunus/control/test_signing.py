"""Ed25519 over canonical JSON: one text per value, and any change breaks the signature."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portunus.control.signing import (
    RULESET_CONTEXT,
    SESSION_CONTEXT,
    SignatureError,
    canonical_json,
    sign_bytes,
    sign_document,
    verify_bytes,
    verify_document,
)


def test_canonical_json() -> None:
    assert canonical_json({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'
    with pytest.raises(ValueError):
        canonical_json({"x": float("nan")})


def test_sign_verify_and_tamper() -> None:
    key = Ed25519PrivateKey.generate()
    doc = sign_document(key, {"version": 7, "rules": []})
    assert verify_document(key.public_key(), doc) == {"version": 7, "rules": []}
    for bad in ({**doc, "payload": doc["payload"].replace("7", "8")},
                {**doc, "signature": sign_document(key, {"version": 8})["signature"]},
                {**doc, "signature": "!!!"},
                {"payload": doc["payload"]}):
        with pytest.raises(SignatureError):
            verify_document(key.public_key(), bad)
    with pytest.raises(SignatureError, match="bad signature"):
        verify_document(Ed25519PrivateKey.generate().public_key(), doc)
    # A signature made in one context is worthless in another.
    with pytest.raises(SignatureError):
        verify_document(key.public_key(), doc, context=SESSION_CONTEXT)


def test_sign_bytes_contexts() -> None:
    key = Ed25519PrivateKey.generate()
    sig = sign_bytes(key, b"nonce", SESSION_CONTEXT)
    assert verify_bytes(key.public_key(), b"nonce", sig, SESSION_CONTEXT)
    assert not verify_bytes(key.public_key(), b"nonce", sig, RULESET_CONTEXT)
    assert not verify_bytes(key.public_key(), b"nonce2", sig, SESSION_CONTEXT)
    assert not verify_bytes(key.public_key(), b"nonce", "not base64!", SESSION_CONTEXT)
