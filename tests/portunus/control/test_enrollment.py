"""Enrollment URIs: render/parse and the errors a user sees for a damaged one."""

from __future__ import annotations

import pytest

from portunus.control.enrollment import (
    EnrollmentUri,
    EnrollmentUriError,
    parse_enrollment_uri,
    secret_hash,
)

FP = "ab" * 32


def test_round_trip_v4_and_v6() -> None:
    for endpoint in ("127.0.0.1:7443", "[::1]:7443", "ctl.example.com:443"):
        uri = EnrollmentUri(endpoint, "s3cr-et_", FP)
        assert parse_enrollment_uri(uri.render()) == uri
    assert EnrollmentUri("h:1", "x", FP).render() == f"portunus://h:1/enroll?v=1&secret=x&fp=sha256%3A{FP}"
    assert parse_enrollment_uri(f"  portunus://h:1/enroll?v=1&secret=x&fp=sha256:{FP.upper()}\n").fingerprint == FP


@pytest.mark.parametrize("uri, message", [
    ("https://h:1/enroll?v=1&secret=x&fp=sha256:" + FP, "not an enrollment URI"),
    ("portunus://h:1/other?v=1&secret=x&fp=sha256:" + FP, "path must be /enroll"),
    ("portunus://h/enroll?v=1&secret=x&fp=sha256:" + FP, "must be HOST:PORT"),
    ("portunus://h:1/enroll?v=2&secret=x&fp=sha256:" + FP, "version '2' not supported"),
    ("portunus://h:1/enroll?v=1&fp=sha256:" + FP, "no secret"),
    ("portunus://h:1/enroll?v=1&secret=x&fp=md5:abc", "sha256:<64 hex digits>"),
    ("portunus://h:1/enroll?v=1&secret=x&fp=sha256:" + FP[:-2], "sha256:<64 hex digits>"),
])
def test_damaged_uris(uri: str, message: str) -> None:
    with pytest.raises(EnrollmentUriError, match=message):
        parse_enrollment_uri(uri)


def test_secret_hash_is_sha256_hex() -> None:
    assert secret_hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
