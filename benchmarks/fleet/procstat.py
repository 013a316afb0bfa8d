"""What a process holds, read from /proc: RSS, open fds, CPU seconds, TCP connections to a port.

(The harness has similar readers; the benchmarks of the product import
nothing from the harness, which is being reorganised.)
"""

from __future__ import annotations

import os
from pathlib import Path

_TCP_ESTABLISHED = "01"  # include/net/tcp_states.h
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process `pid` holds open (from /proc/PID/fd)."""
    out: set[int] = set()
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except (FileNotFoundError, PermissionError):
        return out
    for name in names:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(int(target[8:-1]))
    return out


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of `pid` (all its threads), or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rest = text[text.rindex(")") + 2:].split()  # comm may hold spaces: fields after it
    return (int(rest[11]) + int(rest[12])) / _CLK_TCK


def parse_established(text: str, remote_port: int) -> set[int]:
    """Inodes of ESTABLISHED sockets whose remote port is `remote_port`, from /proc/net/tcp or tcp6 text."""
    out: set[int] = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != _TCP_ESTABLISHED:
            continue
        if int(fields[2].rsplit(":", 1)[1], 16) == remote_port:
            out.add(int(fields[9]))
    return out


def established_to(pid: int, remote_port: int) -> int:
    """How many ESTABLISHED TCP connections process `pid` holds to `remote_port` (IPv4 and IPv6)."""
    mine = socket_inodes(pid)
    found: set[int] = set()
    for name in ("tcp", "tcp6"):
        try:
            found |= parse_established(Path(f"/proc/{pid}/net/{name}").read_text(), remote_port)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return len(found & mine)


def rss_bytes(pid: int) -> int | None:
    """Resident set size of `pid` (VmRSS), or None if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def fd_count(pid: int) -> int | None:
    """Open file descriptors of `pid`, or None if it is gone."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
