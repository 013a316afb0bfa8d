"""The server's keys, generated on first start and kept in the data dir.

    D/tls/server.crt  self-signed ECDSA P-256 certificate for the gRPC listener
    D/tls/server.key  its private key (0600)
    D/tls/signing.key Ed25519 key that signs every rule set sent to clients (0600)

Clients pin the certificate by its SHA-256 fingerprint (carried in the
enrollment URI) and dial with a fixed TLS name, `TLS_NAME`, which the
certificate always carries: the server's address may change, the pin does not.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import NameOID

from portunus.control.files import make_private, write_private

# The name clients verify (gRPC option grpc.ssl_target_name_override).
TLS_NAME = "portunus-server"
# Self-signed and pinned by fingerprint, so expiry only forces re-enrollment:
# ten years keeps that out of anyone's way.
CERT_VALIDITY_DAYS = 3650


@dataclass(frozen=True)
class ServerKeys:
    cert_pem: bytes
    key_pem: bytes
    signing_key: Ed25519PrivateKey

    @property
    def fingerprint(self) -> str:
        return cert_fingerprint(self.cert_pem)

    @property
    def signing_public_key_b64(self) -> str:
        return public_key_b64(self.signing_key.public_key())


def cert_fingerprint(cert_pem_or_der: bytes) -> str:
    """SHA-256 of the certificate's DER encoding, lowercase hex."""
    der = cert_pem_or_der
    if cert_pem_or_der.lstrip().startswith(b"-----BEGIN"):
        der = x509.load_pem_x509_certificate(cert_pem_or_der).public_bytes(serialization.Encoding.DER)
    return hashlib.sha256(der).hexdigest()


def public_key_b64(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def load_public_key_b64(text: str) -> Ed25519PublicKey:
    """Raw Ed25519 public key, base64; ValueError if malformed."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (ValueError, TypeError) as e:
        raise ValueError(f"public key is not base64: {e}") from e
    if len(raw) != 32:
        raise ValueError(f"public key must be 32 bytes, got {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def private_key_pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def load_private_key_pem(text: str | bytes) -> Ed25519PrivateKey:
    data = text.encode() if isinstance(text, str) else text
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"expected an Ed25519 private key, got {type(key).__name__}")
    return key


def make_self_signed_cert(hosts: list[str]) -> tuple[bytes, bytes]:
    """(cert PEM, key PEM) valid for TLS_NAME plus `hosts` (IPs or DNS names)."""
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(TLS_NAME)]
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            if h and h != TLS_NAME:
                names.append(x509.DNSName(h))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, TLS_NAME)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CERT_VALIDITY_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def load_or_create_keys(data_dir: Path, hosts: list[str]) -> ServerKeys:
    """Load D/tls/*, creating whatever is missing (a new cert changes the fingerprint)."""
    tls = data_dir / "tls"
    tls.mkdir(mode=0o700, exist_ok=True)
    cert_path, key_path, sign_path = tls / "server.crt", tls / "server.key", tls / "signing.key"
    for path in (key_path, sign_path):
        make_private(path)  # keys copied in (or restored) with a looser mode
    if not (cert_path.exists() and key_path.exists()):
        cert_pem, key_pem = make_self_signed_cert(hosts)
        write_private(key_path, key_pem)
        write_private(cert_path, cert_pem)
    if not sign_path.exists():
        write_private(sign_path, private_key_pem(Ed25519PrivateKey.generate()).encode())
    return ServerKeys(cert_path.read_bytes(), key_path.read_bytes(), load_private_key_pem(sign_path.read_bytes()))
