"""Entering a named network namespace from Python, for one thread at a time.

`ip netns exec NS cmd` moves a *child process* into a namespace. The harness
itself sometimes needs a socket there (an operator API call to a control
server inside a namespace, an SSH connection to an sshd inside one, a test's
echo server): setns(2) moves only the calling thread, and a socket belongs
for its whole life to the namespace its creating thread was in, so
`with entered_netns(ns): sock = socket.create_connection(...)` gives a socket
in ns while every other thread of the harness stays where it was.
Python 3.11 has no os.setns (3.12 does), hence ctypes.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

NETNS_RUN_DIR = Path("/run/netns")  # where `ip netns add` keeps its bind mounts
CLONE_NEWNET = 0x40000000  # <sched.h>
_libc = ctypes.CDLL(None, use_errno=True)


def netns_path(name: str) -> Path:
    return NETNS_RUN_DIR / name


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


@contextmanager
def entered_netns(name: str | None) -> Iterator[None]:
    """Run the block with this thread in network namespace `name` (None: stay where we are)."""
    if name is None:
        yield
        return
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        try:
            target = os.open(netns_path(name), os.O_RDONLY)
        except FileNotFoundError:
            raise OSError(f"network namespace {name!r} does not exist ({netns_path(name)})") from None
        try:
            _setns(target)
        finally:
            os.close(target)
        try:
            yield
        finally:
            # Going back cannot reasonably fail (we hold the fd); if it did, this thread would
            # keep working in the wrong namespace, so fail loudly rather than carry on.
            _setns(own)
    finally:
        os.close(own)
