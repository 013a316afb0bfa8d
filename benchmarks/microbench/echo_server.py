"""The benchmarks' far end, in its own process: a TCP echo, a UDP echo and a TCP sink on 127.0.0.1.

Run as `python -m benchmarks.microbench.echo_server`; prints one line
`ready tcp=PORT udp=PORT sink=PORT` on stdout once every socket is bound, then
serves until SIGTERM or until stdin closes (so it cannot outlive a killed parent).

The sink is the far end of the bulk cost benchmarks: it reads until EOF and
answers with the byte count (8 bytes, network order), so the client knows
every byte crossed the forwarder before it reads the forwarder's CPU time.

A separate process from the measuring client, so the client, the forwarder
and this end never share a GIL; the same end serves the direct twin and the
proxied measurement, so their ratio cancels its own cost.
"""

from __future__ import annotations

import signal
import socket
import struct
import sys
import threading
from collections.abc import Callable

# One recv can take everything a loopback socket holds after a 64 KiB-1 MiB
# burst; the same size as the copy pump's buffer (portunus.dataplane.tcp).
BUFFER_BYTES = 256 * 1024
DATAGRAM_MAX_BYTES = 65535
UDP_RCVBUF_BYTES = 1 << 20


def serve_tcp_connection(conn: socket.socket) -> None:
    """Echo until EOF, then half-close (what the proxy's half-close path expects)."""
    buf = bytearray(BUFFER_BYTES)
    view = memoryview(buf)
    try:
        with conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while True:
                n = conn.recv_into(view)
                if n == 0:
                    conn.shutdown(socket.SHUT_WR)
                    return
                conn.sendall(view[:n])
    except OSError:
        return  # the client reset the connection: nothing to echo to


def serve_sink_connection(conn: socket.socket) -> None:
    """Read and drop everything until EOF, then send the byte count and close."""
    buf = bytearray(BUFFER_BYTES)
    total = 0
    try:
        with conn:
            while True:
                n = conn.recv_into(buf)
                if n == 0:
                    conn.sendall(struct.pack("!Q", total))
                    return
                total += n
    except OSError:
        return


def serve_tcp(listener: socket.socket, handler: Callable[[socket.socket], None] = serve_tcp_connection) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=handler, args=(conn,), daemon=True).start()


def tcp_listener() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    s.listen(4096)
    return s


def serve_udp(sock: socket.socket) -> None:
    buf = bytearray(DATAGRAM_MAX_BYTES)
    view = memoryview(buf)
    while True:
        try:
            n, addr = sock.recvfrom_into(view)
            sock.sendto(view[:n], addr)
        except OSError:
            continue


def main() -> int:
    tcp = tcp_listener()
    sink = tcp_listener()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    # The windowed UDP cost benchmark keeps a few dozen datagrams in flight.
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RCVBUF_BYTES)
    udp.bind(("127.0.0.1", 0))
    threading.Thread(target=serve_tcp, args=(tcp,), daemon=True).start()
    threading.Thread(target=serve_tcp, args=(sink, serve_sink_connection), daemon=True).start()
    threading.Thread(target=serve_udp, args=(udp,), daemon=True).start()
    print(f"ready tcp={tcp.getsockname()[1]} udp={udp.getsockname()[1]} sink={sink.getsockname()[1]}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
