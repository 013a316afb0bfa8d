"""The client's bundle file: versioned, 0600, and checked on load."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portunus.control.bundle import (
    BUNDLE_FORMAT,
    BundleFileError,
    ClientBundle,
    dump_bundle,
    load_bundle,
)
from portunus.control.pki import (
    cert_fingerprint,
    make_self_signed_cert,
    private_key_pem,
    public_key_b64,
)
from tests.support.proc import run_cli


def make_bundle() -> ClientBundle:
    cert_pem, _ = make_self_signed_cert(["127.0.0.1"])
    return ClientBundle("edge", "127.0.0.1:7443", f"sha256:{cert_fingerprint(cert_pem)}", cert_pem.decode(),
                        public_key_b64(Ed25519PrivateKey.generate().public_key()),
                        private_key_pem(Ed25519PrivateKey.generate()), "2026-01-01T00:00:00+00:00")


def test_round_trip_and_mode(tmp_path: Path) -> None:
    b = make_bundle()
    dump_bundle(tmp_path / "b.json", b)
    assert (tmp_path / "b.json").stat().st_mode & 0o777 == 0o600
    assert json.loads((tmp_path / "b.json").read_text())["format"] == BUNDLE_FORMAT
    assert load_bundle(tmp_path / "b.json") == b


@pytest.mark.parametrize("change, message", [
    ({"format": BUNDLE_FORMAT + 1}, "is newer than this portunus-client reads"),
    ({"format": None}, "re-enroll"),
    ({"extra": 1}, "missing or unknown keys"),
    ({"server_fingerprint": "sha256:" + "0" * 64}, "pinned certificate does not match"),
    ({"signing_public_key": "AAAA"}, "damaged key material"),
])
def test_bad_bundles(tmp_path: Path, change: dict, message: str) -> None:
    dump_bundle(tmp_path / "b.json", make_bundle())
    data = json.loads((tmp_path / "b.json").read_text())
    data.update(change)
    (tmp_path / "b.json").write_text(json.dumps(data))
    with pytest.raises(BundleFileError, match=message):
        load_bundle(tmp_path / "b.json")


def test_client_cli_exits_2_on_a_bad_bundle(tmp_path: Path) -> None:
    (tmp_path / "b.json").write_text("{}")
    r = run_cli("portunus-client", "--bundle", str(tmp_path / "b.json"))
    assert r.returncode == 2 and f"error: {tmp_path / 'b.json'}: bundle format None" in r.stderr
