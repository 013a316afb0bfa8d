"""Real TLS servers and clients for SNI routing tests (Python ssl; no mocks).

A `NamedServer` answers TLS (when the first byte is a TLS handshake) or plain
TCP on one port. Protocol per connection (one direction at a time, so a
single-threaded TLS client never waits on both): the client sends "N M\\n"
and N bytes; the server answers "id:NAME tls|plain\\n", reads the N bytes,
then sends M bytes of `reply_bytes(M)` and the SHA-256 hex of what it
received plus "\\n", and closes.
"""

from __future__ import annotations

import hashlib
import random
import socket
import ssl
from pathlib import Path

from portunus.control.pki import make_self_signed_cert
from tests.support.net import TcpServer, recv_exact

TLS_HANDSHAKE = 0x16


def write_cert(dir_: Path, name: str, hosts: list[str]) -> tuple[Path, Path]:
    """A self-signed certificate for `hosts` (may hold a wildcard): (cert path, key path)."""
    cert, key = make_self_signed_cert(hosts)
    cert_path, key_path = dir_ / f"{name}.pem", dir_ / f"{name}.key"
    cert_path.write_bytes(cert)
    key_path.write_bytes(key)
    return cert_path, key_path


class NamedServer(TcpServer):
    """TLS-or-plain echo server that says who it is (see module doc)."""

    def __init__(self, name: str, cert: Path, key: Path) -> None:
        self.name = name
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(cert, key)
        self.server_names: list[str | None] = []  # SNI each TLS connection carried
        self.plain_connections = 0
        self.ctx.sni_callback = lambda _sock, sni, _ctx: self.server_names.append(sni)  # type: ignore[assignment]
        super().__init__(self._handle)

    def _handle(self, conn: socket.socket) -> None:
        first = conn.recv(1, socket.MSG_PEEK)
        if not first:
            return  # a health probe: connect and close
        if first[0] == TLS_HANDSHAKE:
            with self.ctx.wrap_socket(conn, server_side=True) as tls:
                self._serve(tls, "tls")
        else:
            self.plain_connections += 1
            self._serve(conn, "plain")

    def _serve(self, s: socket.socket, mode: str) -> None:
        header = b""
        while not header.endswith(b"\n"):
            b = s.recv(1)
            if not b:
                return
            header += b
        n, m = (int(x) for x in header.split())
        s.sendall(f"id:{self.name} {mode}\n".encode())
        h = hashlib.sha256()
        while n:
            b = s.recv(min(n, 1 << 18))
            if not b:
                return
            h.update(b)
            n -= len(b)
        s.sendall(reply_bytes(m))
        s.sendall(h.hexdigest().encode() + b"\n")


def reply_bytes(m: int) -> bytes:
    """The M bytes a NamedServer sends back (random, reproducible)."""
    return random.Random(m).randbytes(m)


def client_hello(name: str | None, maximum: ssl.TLSVersion = ssl.TLSVersion.TLSv1_3) -> bytes:
    """The first flight of a Python ssl client for `name` (what it sends before any answer)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = maximum
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=name)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def client_context(cafile: Path) -> ssl.SSLContext:
    """A client that trusts only `cafile`: reaching another server fails verification."""
    ctx = ssl.create_default_context(cafile=str(cafile))
    return ctx


def talk(sock: socket.socket, payload: bytes, reply_size: int = 5) -> tuple[str, bytes, str]:
    """Run the NamedServer protocol on a connected (TLS or plain) socket:
    (identity line, the reply bytes, server's SHA-256 of what it received)."""
    sock.sendall(f"{len(payload)} {reply_size}\n".encode() + payload)
    line = b""
    while not line.endswith(b"\n"):
        b = sock.recv(1)
        if not b:
            raise ConnectionError(f"closed before the identity line (got {line!r})")
        line += b
    reply = recv_exact(sock, reply_size)
    digest = recv_exact(sock, 65)
    return line.decode().strip(), reply, digest.decode().strip()


def tls_talk(port: int, server_name: str, cafile: Path, payload: bytes = b"hello", reply_size: int = 5,
             timeout_s: float = 30.0) -> tuple[str, bytes, str]:
    """Connect through 127.0.0.1:port with TLS for `server_name` (verified against `cafile`)."""
    ctx = client_context(cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as raw, \
            ctx.wrap_socket(raw, server_hostname=server_name) as tls:
        return talk(tls, payload, reply_size)


def intact(result: tuple[str, bytes, str], payload: bytes) -> bool:
    """True if the server received exactly `payload` and the client exactly the server's reply."""
    _ident, reply, digest = result
    return reply == reply_bytes(len(reply)) and digest == hashlib.sha256(payload).hexdigest()
