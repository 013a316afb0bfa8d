"""The latency / connection-rate target: `python -m harness.measure.echo_server --port P [--workers N]`.

A small epoll echo server, run as its own process (group) so its CPU is not
the harness's. The first byte a client sends picks what the connection is:

  b"C"  one-shot: the server answers b"C" and closes at once. The server
        closes first, so TIME_WAIT lands on the server side and a client
        opening tens of thousands of connections does not run out of
        ephemeral ports. Connection setup samples and connrate use this.
  b"E"  echo: the server answers b"E", then echoes every byte until EOF.
        RTT samples use this (many 1-byte round trips per connection).

Anything else: the connection is closed. With --workers N the listening
socket is shared by N forked processes (each its own epoll loop).
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import os
import select
import signal
import socket
import sys

MODE_ONESHOT = b"C"
MODE_ECHO = b"E"
BACKLOG = 4096  # net.core.somaxconn here; bursts of connects must not be refused by the target
RECV_BYTES = 65536
_PR_SET_PDEATHSIG = 1
# accept() errors that mean "out of a resource for now": back off (epoll fires again), don't die.
_TRANSIENT_ACCEPT = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM, errno.ECONNABORTED}


def _die_with_parent() -> None:
    """SIGTERM this worker when the first server process dies (e.g. killed with the harness)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def open_listener(host: str, port: int) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, port))
    s.listen(BACKLOG)
    s.setblocking(False)
    return s


class _Conn:
    __slots__ = ("sock", "echo", "pending")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.echo = False
        self.pending = b""  # echo bytes the socket did not take yet


def serve(listener: socket.socket) -> None:
    """Run one epoll loop on listener until killed."""
    ep = select.epoll()
    ep.register(listener.fileno(), select.EPOLLIN)
    conns: dict[int, _Conn] = {}
    lfd = listener.fileno()

    def close(fd: int) -> None:
        c = conns.pop(fd, None)
        if c is not None:
            c.sock.close()  # closing the fd also removes it from the epoll set

    def on_readable(fd: int, c: _Conn) -> None:
        try:
            data = c.sock.recv(RECV_BYTES)
        except BlockingIOError:
            return
        except OSError:
            close(fd)
            return
        if not data:
            close(fd)
            return
        if not c.echo:
            mode, data = data[:1], data[1:]
            if mode == MODE_ONESHOT:
                try:
                    c.sock.send(MODE_ONESHOT)
                except OSError:
                    pass
                close(fd)
                return
            if mode != MODE_ECHO:
                close(fd)
                return
            c.echo = True
            data = MODE_ECHO + data
        send(fd, c, data)

    def send(fd: int, c: _Conn, data: bytes) -> None:
        data = c.pending + data
        try:
            n = c.sock.send(data)
        except BlockingIOError:
            n = 0
        except OSError:
            close(fd)
            return
        c.pending = data[n:]
        ep.modify(fd, select.EPOLLIN | (select.EPOLLOUT if c.pending else 0))

    while True:
        for fd, ev in ep.poll():
            if fd == lfd:
                while True:
                    try:
                        sock, _ = listener.accept()
                    except BlockingIOError:
                        break
                    except OSError as e:
                        if e.errno in _TRANSIENT_ACCEPT:
                            break
                        raise
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    c = _Conn(sock)
                    conns[sock.fileno()] = c
                    ep.register(sock.fileno(), select.EPOLLIN)
                    on_readable(sock.fileno(), c)  # the request is often there already
                continue
            c2 = conns.get(fd)
            if c2 is None:
                continue
            if ev & select.EPOLLOUT and c2.pending:
                send(fd, c2, b"")
            if fd in conns and ev & (select.EPOLLIN | select.EPOLLHUP | select.EPOLLERR):
                on_readable(fd, c2)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m harness.measure.echo_server", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--workers", type=int, default=1, help="processes sharing the listening socket")
    args = p.parse_args(argv)
    listener = open_listener(args.host, args.port)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    for _ in range(args.workers - 1):
        if os.fork() == 0:  # a worker: same socket, its own loop, in its parent's process group
            _die_with_parent()
            break
    try:
        serve(listener)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
