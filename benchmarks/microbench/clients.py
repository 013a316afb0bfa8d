"""The measuring side: one operation of each microbenchmark, on real sockets.

Each `*_ops` function runs `ops` operations back to back and returns the
elapsed seconds (time.perf_counter), so a sample's cost is paid once per
sample, not per operation. They run in the pytest process; the forwarder and
the echo end are other processes.
"""

from __future__ import annotations

import select
import socket
import struct
import time

# Largest chunk handed to one send(): big enough that a 1 MiB echo takes a
# few syscalls, small enough that the echo can start answering early.
SEND_CHUNK_BYTES = 256 * 1024
# A benchmark that hangs is a failure, not a slow sample: every blocking call
# gives up after this long (a loopback round trip takes microseconds).
IO_TIMEOUT_S = 10.0
# UDP: a datagram not answered within this long counts as lost and is sent
# again (loopback does not drop under this load; a busy host might delay).
UDP_REPLY_TIMEOUT_S = 1.0
UDP_MAX_RETRIES = 5


class BenchIOError(RuntimeError):
    """The far end closed, timed out or answered wrongly: the sample is invalid."""


def open_stream(port: int) -> socket.socket:
    """A TCP connection to 127.0.0.1:port, Nagle off (1-byte round trips)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT_S)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def open_datagram(port: int) -> socket.socket:
    """A UDP socket connected to 127.0.0.1:port."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(UDP_REPLY_TIMEOUT_S)
    s.connect(("127.0.0.1", port))
    return s


def _echo_once(sock: socket.socket, poller: select.poll, payload: memoryview, buf: memoryview) -> None:
    """Send `payload` and read the same number of bytes back, both ways at once.

    Sending all first could deadlock on 1 MiB: the echo blocks writing to us
    while we block writing to it. So send and receive without blocking and
    wait in poll() only when neither can move.
    """
    fd = sock.fileno()
    n = len(payload)
    sent = got = 0
    dontwait = socket.MSG_DONTWAIT
    while got < n:
        moved = False
        if sent < n:
            try:
                sent += sock.send(payload[sent:sent + SEND_CHUNK_BYTES], dontwait)
                moved = True
            except BlockingIOError:
                pass
        try:
            r = sock.recv_into(buf, len(buf), dontwait)
        except BlockingIOError:
            r = -1
        if r == 0:
            raise BenchIOError(f"connection closed after {got} of {n} echoed bytes")
        if r > 0:
            got += r
            moved = True
        if not moved:
            poller.modify(fd, select.POLLIN | (select.POLLOUT if sent < n else 0))
            if not poller.poll(IO_TIMEOUT_S * 1000):
                raise BenchIOError(f"no progress for {IO_TIMEOUT_S} s ({got} of {n} echoed bytes)")
    if got != n:
        raise BenchIOError(f"echo returned {got} bytes for {n} sent")


def echo_ops(sock: socket.socket, payload: bytes, ops: int) -> float:
    """`ops` echoes of `payload` on one connection; returns elapsed seconds."""
    view = memoryview(payload)
    buf = memoryview(bytearray(SEND_CHUNK_BYTES))
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    t0 = time.perf_counter()
    for _ in range(ops):
        _echo_once(sock, poller, view, buf)
    return time.perf_counter() - t0


def rtt_ops(sock: socket.socket, ops: int) -> float:
    """`ops` 1-byte round trips on one connection; returns elapsed seconds."""
    send, recv = sock.send, sock.recv
    t0 = time.perf_counter()
    for _ in range(ops):
        send(b"x")
        if recv(1) != b"x":
            raise BenchIOError("1-byte round trip: connection closed or wrong byte")
    return time.perf_counter() - t0


def connect_ops(port: int, ops: int) -> float:
    """`ops` times: connect, send 1 byte, read it back, close; returns elapsed seconds."""
    addr = ("127.0.0.1", port)
    t0 = time.perf_counter()
    for _ in range(ops):
        s = socket.create_connection(addr, timeout=IO_TIMEOUT_S)
        try:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.send(b"x")
            if s.recv(1) != b"x":
                raise BenchIOError("connection setup: first byte not echoed")
        finally:
            s.close()
    return time.perf_counter() - t0


def udp_rtt_ops(sock: socket.socket, ops: int, payload_bytes: int) -> float:
    """`ops` datagram round trips (a sequence number leads each payload, so a
    late answer to a resent datagram is recognised and skipped)."""
    pad = b"\0" * (payload_bytes - 8)
    t0 = time.perf_counter()
    for seq in range(ops):
        msg = struct.pack("!Q", seq) + pad
        for _attempt in range(UDP_MAX_RETRIES):
            sock.send(msg)
            try:
                while True:
                    reply = sock.recv(65535)
                    if reply[:8] == msg[:8]:
                        break
            except TimeoutError:
                continue
            break
        else:
            raise BenchIOError(f"UDP: datagram {seq} unanswered after {UDP_MAX_RETRIES} tries")
    return time.perf_counter() - t0


# ---------------------------------------------------------------- fixed amounts of work (cost benchmarks)


def bulk_send(port: int, total_bytes: int, chunk: bytes) -> float:
    """Send `total_bytes` on one connection to a sink (echo_server's), half-close, and wait for
    the sink's byte count: every byte has crossed the path when this returns elapsed seconds."""
    view = memoryview(chunk)
    t0 = time.perf_counter()
    with open_stream(port) as s:
        left = total_bytes
        while left > 0:
            s.sendall(view[:min(left, len(view))])
            left -= min(left, len(view))
        s.shutdown(socket.SHUT_WR)
        reply = b""
        while len(reply) < 8:
            part = s.recv(8 - len(reply))
            if not part:
                raise BenchIOError(f"sink closed before reporting its byte count ({len(reply)} of 8 bytes)")
            reply += part
    got = struct.unpack("!Q", reply)[0]
    if got != total_bytes:
        raise BenchIOError(f"sink received {got} bytes, {total_bytes} were sent")
    return time.perf_counter() - t0


def udp_window_ops(sock: socket.socket, ops: int, payload_bytes: int, window: int) -> float:
    """`ops` datagrams echoed, `window` in flight at a time (send a window, read its replies):
    the forwarder sees bursts, as batched UDP traffic looks. A lost datagram fails the sample
    (loopback with this window does not drop; a silent retry would change the work done)."""
    pad = b"\0" * (payload_bytes - 8)
    sent = 0
    t0 = time.perf_counter()
    while sent < ops:
        n = min(window, ops - sent)
        for seq in range(sent, sent + n):
            sock.send(struct.pack("!Q", seq) + pad)
        for _ in range(n):
            try:
                sock.recv(65535)
            except TimeoutError:
                raise BenchIOError(f"UDP: a datagram of the window at {sent} was not answered within "
                                   f"{UDP_REPLY_TIMEOUT_S} s") from None
        sent += n
    return time.perf_counter() - t0
