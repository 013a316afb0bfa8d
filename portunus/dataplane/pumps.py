"""Byte pumps: move one direction of a TCP connection until EOF.

Two implementations with the same contract (`pump(src, dst, counter)` returns
on EOF from `src`, raises OSError on a socket error; the caller decides what
EOF and errors mean for the connection):

* `splice_pump`: Linux only, socket -> pipe -> socket with `os.splice`; the
  payload never enters Python memory. One syscall pair per pipe-full.
* `copy_pump`: `recv_into` a reusable buffer, then `sendall`; used when
  splice is disabled or unavailable, and for bandwidth-capped rules, where
  every chunk must pass a token bucket.

Both run on blocking sockets in their own thread: a blocked splice or recv
releases the GIL, so a connection costs no CPU while it waits.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import sys
from collections.abc import Sequence
from typing import Protocol

SPLICE_AVAILABLE = sys.platform.startswith("linux") and hasattr(os, "splice")

# 1 MiB: the default /proc/sys/fs/pipe-max-size on Linux. A bigger pipe lets
# one splice move more bytes, so fewer syscalls (and fewer GIL round trips)
# per GB. If the kernel refuses (pipe-max-size lowered, or the per-user pipe
# budget pipe-user-pages-soft is spent) the pipe keeps its default 64 KiB.
PIPE_SIZE_BYTES = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)

# Copy path buffer, allocated once per direction. 256 KiB: large enough that
# a recv drains a loopback socket's typical backlog in one call, small enough
# that 1,000 connections cost 512 MiB at most (only touched pages count).
COPY_BUFFER_BYTES = 256 * 1024


class Counter:
    """Bytes moved by one direction; written by its pump thread only."""

    __slots__ = ("bytes",)

    def __init__(self) -> None:
        self.bytes = 0


class Throttle(Protocol):
    def max_chunk(self) -> int: ...

    def consume(self, nbytes: int) -> None:
        """Account `nbytes` and block until sending them keeps within the cap."""


def open_pipe() -> tuple[int, int, int]:
    """Create a close-on-exec pipe sized for splicing; return (read_fd, write_fd, size)."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        size = fcntl.fcntl(w, _F_SETPIPE_SZ, PIPE_SIZE_BYTES)
    except OSError:
        size = 65536  # the kernel refused a bigger pipe: keep the default
    return r, w, size


def splice_pump(src: int, dst: int, counter: Counter, pipe: tuple[int, int, int]) -> None:
    """Move bytes from socket fd `src` to socket fd `dst` through `pipe` until EOF.

    On a normal return the pipe is empty again (every byte read into it was
    written out), so the caller may reuse it; after an exception it may not.
    """
    splice = os.splice
    move = os.SPLICE_F_MOVE
    r, w, size = pipe
    while True:
        n = splice(src, w, size, flags=move)
        if n == 0:
            return
        while n:
            # No SPLICE_F_MORE here: it corks the socket like MSG_MORE and
            # would hold a small response back until more data arrives.
            m = splice(r, dst, n, flags=move)
            n -= m
            counter.bytes += m


def copy_pump(src: socket.socket, dst: socket.socket, counter: Counter,
              throttles: Sequence[Throttle] = (), buffer: bytearray | None = None) -> None:
    """Move bytes from `src` to `dst` through a userspace buffer until EOF."""
    buf = buffer if buffer is not None else bytearray(COPY_BUFFER_BYTES)
    view = memoryview(buf)
    recv_into = src.recv_into
    sendall = dst.sendall
    size = len(buf)
    try:
        if not throttles:
            while True:
                n = recv_into(view, size)
                if n == 0:
                    return
                sendall(view[:n])
                counter.bytes += n
        else:
            while True:
                # Small chunks when capped: the receiver then sees a smooth
                # rate, and equal connections sharing a bucket take turns.
                want = min(size, *(t.max_chunk() for t in throttles))
                n = recv_into(view, want)
                if n == 0:
                    return
                for t in throttles:
                    t.consume(n)
                sendall(view[:n])
                counter.bytes += n
    finally:
        view.release()


# Errors that end a direction the way a reset does: the peer is gone.
PEER_GONE = frozenset({errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN, errno.ETIMEDOUT,
                       errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNABORTED})
