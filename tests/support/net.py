"""Real-socket test servers and clients (no mocks): echo, exchange, sink."""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from harness.site import netutil


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A bindable port below the ephemeral range (see harness.site.netutil.free_port)."""
    return netutil.free_port(host, kind)


def free_ports(n: int, kind: int = socket.SOCK_STREAM) -> list[int]:
    """n distinct free ports."""
    return [free_port(kind) for _ in range(n)]


def free_port_range(n: int, kind: int = socket.SOCK_STREAM) -> int:
    """Start of n consecutive ports, each bindable now, below the ephemeral range."""
    for _ in range(200):
        start = free_port(kind)
        if all(_bindable(p, kind) for p in range(start + 1, start + n)):
            netutil._handed_out.update(range(start, start + n))
            return start
    raise RuntimeError("no free port range")


def _bindable(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return port not in netutil._handed_out


def wait_port(port: int, host: str = "127.0.0.1", timeout_s: float = 10.0) -> None:
    """Block until a TCP listener accepts on host:port."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s} s") from None
            time.sleep(0.02)


def recv_all(sock: socket.socket, bufsize: int = 1 << 16) -> bytes:
    chunks = []
    while True:
        b = sock.recv(bufsize)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


class TcpServer:
    """A threaded TCP server on 127.0.0.1 running `handler(conn)` per connection."""

    def __init__(self, handler: Callable[[socket.socket], None], host: str = "127.0.0.1", port: int = 0,
                 backlog: int = 4096):
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        self.handler = handler
        self.accepted = 0
        self.errors: list[BaseException] = []
        self._stop = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        try:
            with conn:
                self.handler(conn)
        except Exception as e:  # recorded for the test to assert on
            self.errors.append(e)

    def close(self) -> None:
        self._stop = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(timeout=2)

    def __enter__(self) -> TcpServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def echo_handler(conn: socket.socket) -> None:
    """Echo until EOF, then half-close."""
    while True:
        b = conn.recv(1 << 16)
        if not b:
            break
        conn.sendall(b)
    conn.shutdown(socket.SHUT_WR)


_POOL = os.urandom(16 << 20)  # random bytes; payloads are random slices of it


def random_payload(size: int, rng) -> bytes:
    start = rng.randrange(0, len(_POOL) - size + 1) if size < len(_POOL) else 0
    return _POOL[start:start + size]


class ExchangeServer(TcpServer):
    """Per connection: reads everything until EOF (SHA-256 recorded) while sending
    its own random payload of `reply_size(tag)` bytes, then half-closes. The
    client's first 16 bytes are its tag; results are keyed by it."""

    def __init__(self, reply_size: Callable[[bytes], int], rng, **kw):
        self.reply_size = reply_size
        self.rng = rng
        self.results: dict[bytes, tuple[str, str]] = {}  # tag -> (sha of received, sha of sent)
        self._lock = threading.Lock()
        super().__init__(self._handle, **kw)

    def _handle(self, conn: socket.socket) -> None:
        tag = b""
        while len(tag) < 16:
            b = conn.recv(16 - len(tag))
            if not b:
                return
            tag += b
        with self._lock:
            reply = random_payload(self.reply_size(tag), self.rng)
        h = hashlib.sha256(tag)
        sender = threading.Thread(target=lambda: (conn.sendall(reply), conn.shutdown(socket.SHUT_WR)))
        sender.start()
        while True:
            b = conn.recv(1 << 18)
            if not b:
                break
            h.update(b)
        sender.join()
        with self._lock:
            self.results[tag] = (h.hexdigest(), hashlib.sha256(reply).hexdigest())


def exchange(port: int, payload: bytes, tag: bytes, host: str = "127.0.0.1",
             timeout_s: float = 120.0) -> tuple[str, str]:
    """Client side of ExchangeServer: send tag+payload, half-close, read the reply.
    Returns (sha of what we sent incl. tag, sha of what we received)."""
    with socket.create_connection((host, port), timeout=timeout_s) as s:
        sender = threading.Thread(target=lambda: (s.sendall(tag + payload), s.shutdown(socket.SHUT_WR)))
        sender.start()
        h = hashlib.sha256()
        while True:
            b = s.recv(1 << 18)
            if not b:
                break
            h.update(b)
        sender.join()
    return hashlib.sha256(tag + payload).hexdigest(), h.hexdigest()


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Read exactly n bytes; ConnectionError if the peer closes first."""
    buf = bytearray()
    while len(buf) < n:
        b = sock.recv(min(n - len(buf), 1 << 18))
        if not b:
            raise ConnectionError(f"EOF after {len(buf)} of {n} bytes")
        buf += b
    return bytes(buf)


class FramedServer(TcpServer):
    """Request then reply, no half-close (what a forwarder without half-close, e.g. rinetd, can
    carry): 16-byte tag, up and down lengths, the request, then the reply; each side sends only
    after the other has finished. results: tag -> (sha of received, sha of sent)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.results: dict[bytes, tuple[str, str]] = {}
        super().__init__(self._handle, host=host)

    def _handle(self, conn: socket.socket) -> None:
        head = recv_exact(conn, 24)
        tag, up, down = head[:16], *struct.unpack("!II", head[16:])
        got = hashlib.sha256(recv_exact(conn, up)).hexdigest()
        reply = random.Random(tag).randbytes(down)
        conn.sendall(reply)
        self.results[tag] = (got, hashlib.sha256(reply).hexdigest())
        while conn.recv(65536):  # until the client closes
            pass


def framed_exchange(port: int, tag: bytes, payload: bytes, down: int,
                    host: str = "127.0.0.1") -> tuple[str, str]:
    """Client side of FramedServer. Returns (sha of what we sent, sha of what we received)."""
    with socket.create_connection((host, port), timeout=60) as s:
        s.sendall(tag + struct.pack("!II", len(payload), down) + payload)
        got = recv_exact(s, down)
    return hashlib.sha256(payload).hexdigest(), hashlib.sha256(got).hexdigest()


def assert_exchanges_intact(srv: ExchangeServer | FramedServer, results: dict[int, tuple[str, str]],
                            tags: Sequence[bytes], label: str, timeout_s: float = 30.0) -> None:
    """Compare each client's (sent, received) SHA-256 with what the server recorded for its tag.

    The client is done when the server's reply ends; the server records its side just after,
    so wait (up to timeout_s) until it has recorded every tag."""
    deadline = time.monotonic() + timeout_s
    while len(srv.results) < len(tags) and time.monotonic() < deadline:
        time.sleep(0.01)
    for i, tag in enumerate(tags):
        sent_sha, got_sha = results[i]
        srv_got, srv_sent = srv.results[tag]
        assert srv_got == sent_sha, f"{label}: client->target bytes differ on connection {i}"
        assert got_sha == srv_sent, f"{label}: target->client bytes differ on connection {i}"


@contextlib.contextmanager
def tcp_server(handler: Callable[[socket.socket], None], **kw) -> Iterator[TcpServer]:
    srv = TcpServer(handler, **kw)
    try:
        yield srv
    finally:
        srv.close()


class UdpEchoServer:
    """A UDP echo server on `host` (one thread): echoes every datagram to its sender and
    records the source addresses it saw (the forwarder's per-flow upstream sockets)."""

    # Large receive buffer (clamped to net.core.rmem_max) so bursts from 100
    # flows are not dropped by the echo end itself.
    RCVBUF_BYTES = 4 << 20

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(fam, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.RCVBUF_BYTES)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        self.sources: set = set()
        self.datagrams = 0
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(65535)
            except OSError:
                return
            if addr is None:  # shutdown() woke us: closing
                return
            self.sources.add(addr)
            self.datagrams += 1
            try:
                self.sock.sendto(data, addr)
            except OSError:
                pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self._thread.join(timeout=2)

    def __enter__(self) -> UdpEchoServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
