"""The client's identity file (`portunus-client enroll ... --out bundle.json`).

    {"format": 1, "client": NAME, "endpoint": "HOST:PORT",
     "server_fingerprint": "sha256:HEX", "server_cert_pem": PEM,
     "signing_public_key": b64 Ed25519 (verifies rule sets),
     "client_private_key_pem": PEM (Ed25519; proves who we are), "enrolled_at": ISO time}

It holds a private key, so it is written 0600. Loading re-checks that the
pinned certificate matches the pinned fingerprint.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from portunus.control.files import write_private
from portunus.control.pki import cert_fingerprint, load_private_key_pem, load_public_key_b64

# Bundle format history:
#   1  endpoint, pinned certificate + fingerprint, signing key, client key
BUNDLE_FORMAT = 1


class BundleFileError(Exception):
    """A bundle file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class ClientBundle:
    client: str
    endpoint: str
    server_fingerprint: str       # "sha256:<hex>"
    server_cert_pem: str
    signing_public_key: str       # base64 raw Ed25519
    client_private_key_pem: str
    enrolled_at: str

    def signing_key(self) -> Ed25519PublicKey:
        return load_public_key_b64(self.signing_public_key)

    def client_key(self) -> Ed25519PrivateKey:
        return load_private_key_pem(self.client_private_key_pem)


def dump_bundle(path: str | Path, bundle: ClientBundle) -> None:
    """Write the bundle atomically, mode 0600 (see `files.write_private`)."""
    text = json.dumps({"format": BUNDLE_FORMAT, **asdict(bundle)}, indent=2, sort_keys=True) + "\n"
    write_private(path, text.encode())


def load_bundle(path: str | Path) -> ClientBundle:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise BundleFileError(f"{path}: cannot read: {e.strerror or e}") from None
    except ValueError as e:
        raise BundleFileError(f"{path}: not JSON: {e}") from None
    if not isinstance(data, dict):
        raise BundleFileError(f"{path}: not a bundle (expected a JSON object)")
    fmt = data.pop("format", None)
    if fmt != BUNDLE_FORMAT:
        newer = isinstance(fmt, int) and fmt > BUNDLE_FORMAT
        raise BundleFileError(f"{path}: bundle format {fmt!r} " + (
            f"is newer than this portunus-client reads ({BUNDLE_FORMAT}); upgrade portunus-client" if newer
            else "unknown; re-enroll with `portunus-client enroll URI --out FILE`"))
    try:
        bundle = ClientBundle(**data)
    except TypeError as e:
        raise BundleFileError(f"{path}: missing or unknown keys: {e}") from None
    try:
        actual = cert_fingerprint(bundle.server_cert_pem.encode())
        bundle.signing_key()
        bundle.client_key()
    except ValueError as e:
        raise BundleFileError(f"{path}: damaged key material: {e}") from None
    if f"sha256:{actual}" != bundle.server_fingerprint:
        raise BundleFileError(f"{path}: pinned certificate does not match server_fingerprint "
                              f"({bundle.server_fingerprint} vs sha256:{actual}); re-enroll")
    return bundle
