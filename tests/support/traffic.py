"""Bulk traffic for quota tests: a TCP sink that counts, a sender that pushes until cut, UDP twins."""

from __future__ import annotations

import socket
import threading
import time

from tests.support.net import TcpServer

SEND_CHUNK_BYTES = 64 * 1024
_CHUNK = b"\x5a" * SEND_CHUNK_BYTES


class ByteSink(TcpServer):
    """Reads every connection to its end and counts the bytes (total and per connection)."""

    def __init__(self, **kw: object) -> None:
        self.total = 0
        self.per_conn: list[int] = []
        self._lock = threading.Lock()
        super().__init__(self._handle, **kw)  # type: ignore[arg-type]

    def _handle(self, conn: socket.socket) -> None:
        n = 0
        buf = bytearray(1 << 20)
        try:
            while True:
                got = conn.recv_into(buf)
                if not got:
                    break
                n += got
                with self._lock:
                    self.total += got
        except OSError:
            pass  # reset by the forwarder: what arrived is counted
        with self._lock:
            self.per_conn.append(n)


def blast(port: int, nbytes: int, host: str = "127.0.0.1", timeout_s: float = 30.0) -> tuple[int, bool]:
    """Send up to `nbytes` to host:port: (bytes the kernel took, True if the connection was cut)."""
    sent = 0
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as s:
            while sent < nbytes:
                sent += s.send(_CHUNK[: min(SEND_CHUNK_BYTES, nbytes - sent)])
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
    except OSError:
        return sent, True
    return sent, False


def connection_refused(port: int, host: str = "127.0.0.1") -> bool:
    """True if a new connection is reset (or closed) by the forwarder before any byte gets through."""
    try:
        with socket.create_connection((host, port), timeout=5) as s:
            s.settimeout(5)
            time.sleep(0.1)
            s.sendall(b"hello")
            return s.recv(1) == b""
    except OSError:
        return True


class UdpSink:
    """Counts the datagrams and bytes arriving on a UDP port; replies with `reply_bytes` per datagram."""

    def __init__(self, reply_bytes: int = 0, host: str = "127.0.0.1") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((host, 0))
        self.port = self.sock.getsockname()[1]
        self.reply = b"r" * reply_bytes
        self.bytes = 0
        self.datagrams = 0
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop:
            try:
                data, addr = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.bytes += len(data)
            self.datagrams += 1
            if self.reply:
                try:
                    self.sock.sendto(self.reply, addr)
                except OSError:
                    pass

    def close(self) -> None:
        self._stop = True
        self._thread.join(timeout=2)
        self.sock.close()


def udp_blast(port: int, datagrams: int, size: int, pace_s: float = 0.0002,
              host: str = "127.0.0.1") -> tuple[socket.socket, int]:
    """Send `datagrams` of `size` bytes from one socket (one flow); returns (socket, replies read).
    Paced so the loopback buffers never drop: every loss is the forwarder's decision."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.connect((host, port))
    s.setblocking(False)
    payload = b"u" * size
    replies = 0
    for i in range(datagrams):
        s.send(payload)
        if pace_s and i % 8 == 7:
            time.sleep(pace_s * 8)
        try:
            while s.recv(65535):
                replies += 1
        except (BlockingIOError, ConnectionRefusedError):
            pass
    return s, replies
