"""Splice pipes: created on demand, reused while empty, held only while bytes are in flight.

A connection takes a pipe from the pool when a direction has bulk bytes to
move and gives it back as soon as the pipe is empty again, so an idle
connection holds no pipe (a process may hold at most 20,000 fds here; two
pipe fds per idle direction would cap idle connections at a fifth of that).
"""

from __future__ import annotations

import fcntl
import os
import sys
from collections import deque

SPLICE_AVAILABLE = sys.platform.startswith("linux") and hasattr(os, "splice")

# 1 MiB: the default /proc/sys/fs/pipe-max-size on Linux. A bigger pipe lets
# one splice move more bytes, so fewer syscalls per GB. If the kernel refuses
# (pipe-max-size lowered, or the per-user pipe budget pipe-user-pages-soft is
# spent) the pipe keeps its default 64 KiB.
PIPE_SIZE_BYTES = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
# Empty pipes kept for reuse (two fds each): enough for every direction that
# moves bulk bytes at the same moment on a busy forwarder.
MAX_POOLED_PIPES = 256

Pipe = tuple[int, int, int]  # (read fd, write fd, capacity in bytes)


def open_pipe() -> Pipe:
    """Create a close-on-exec, non-blocking pipe sized for splicing."""
    r, w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        size = fcntl.fcntl(w, _F_SETPIPE_SZ, PIPE_SIZE_BYTES)
    except OSError:
        size = 65536  # the kernel refused a bigger pipe: keep the default
    return r, w, size


class PipePool:
    """Empty splice pipes for reuse. Only a pipe known to be empty may be returned."""

    def __init__(self, max_pipes: int = MAX_POOLED_PIPES) -> None:
        self._pipes: deque[Pipe] = deque()
        self._max = max_pipes

    def get(self) -> Pipe:
        try:
            return self._pipes.pop()
        except IndexError:
            return open_pipe()

    def put(self, pipe: Pipe) -> None:
        if len(self._pipes) < self._max:
            self._pipes.append(pipe)
        else:
            self.discard(pipe)

    @staticmethod
    def discard(pipe: Pipe) -> None:
        os.close(pipe[0])
        os.close(pipe[1])

    def pooled(self) -> int:
        return len(self._pipes)

    def close(self) -> None:
        while self._pipes:
            self.discard(self._pipes.pop())
