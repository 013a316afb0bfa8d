"""The benchmarks' far end, in its own process: a TCP echo and a UDP echo on 127.0.0.1.

Run as `python -m benchmarks.microbench.echo_server`; prints one line
`ready tcp=PORT udp=PORT` on stdout once both sockets are bound, then serves
until SIGTERM or until stdin closes (so it cannot outlive a killed parent).

A separate process from the measuring client, so the client, the forwarder
and this end never share a GIL; the same end serves the direct twin and the
proxied measurement, so their ratio cancels its own cost.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading

# One recv can take everything a loopback socket holds after a 64 KiB-1 MiB
# burst; the same size as the copy pump's buffer (portunus.dataplane.tcp).
BUFFER_BYTES = 256 * 1024
DATAGRAM_MAX_BYTES = 65535


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


def serve_tcp(listener: socket.socket) -> None:
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        threading.Thread(target=serve_tcp_connection, args=(conn,), daemon=True).start()


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
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind(("127.0.0.1", 0))
    tcp.listen(4096)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    threading.Thread(target=serve_tcp, args=(tcp,), daemon=True).start()
    threading.Thread(target=serve_udp, args=(udp,), daemon=True).start()
    print(f"ready tcp={tcp.getsockname()[1]} udp={udp.getsockname()[1]}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    stop.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
