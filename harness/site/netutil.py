"""Loopback ports: allocation, listener discovery without connecting, readiness waits."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

LOOPBACK = "127.0.0.1"
_TCP_LISTEN = "0A"  # include/net/tcp_states.h: TCP_LISTEN = 10


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999  # Linux default


# Ports handed out by this process, so two calls never return the same one.
_handed_out: set[int] = set()


def free_port(host: str = LOOPBACK, kind: int = socket.SOCK_STREAM) -> int:
    """A port that is bindable now, chosen BELOW the kernel's ephemeral range.

    A port the kernel hands out for bind(0) is an ephemeral port: between our
    check and the real bind, any outgoing connection on the host (a forwarder
    dialing its target, a test client) may be given the same port, and the
    bind then fails with EADDRINUSE. Ports outside the ephemeral range are
    never handed out implicitly, so only an explicit bind can race us.
    """
    import random

    eph_lo, eph_hi = _ephemeral_range()
    lo, hi = (10000, eph_lo) if eph_lo > 12000 else (eph_hi + 1, 65535)
    if hi - lo < 1000:  # unusual port layout: fall back to the kernel's choice
        lo = hi = 0
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(2000):
        port = random.randrange(lo, hi) if hi else 0
        if port in _handed_out:
            continue
        with socket.socket(family, kind) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                continue
            port = int(s.getsockname()[1])
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free port on {host} in {lo}-{hi}")


def port_bindable(port: int, host: str = LOOPBACK) -> bool:
    """True if a TCP listener could bind host:port right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def parse_proc_net_tcp_listeners(text: str) -> dict[int, set[int]]:
    """{port: socket inodes} of LISTEN sockets, from the text of /proc/net/tcp or /proc/net/tcp6."""
    ports: dict[int, set[int]] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != _TCP_LISTEN:
            continue
        port = int(fields[1].rsplit(":", 1)[1], 16)
        ports.setdefault(port, set()).add(int(fields[9]))
    return ports


def parse_proc_net_udp_bound(text: str) -> dict[int, set[int]]:
    """{port: socket inodes} of UDP sockets bound to a local port, from /proc/net/udp or udp6.

    Every UDP socket there has a local port; a listener is one with no remote
    peer (remote address all zeros, state 07 = TCP_CLOSE reused by UDP).
    """
    ports: dict[int, set[int]] = {}
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or set(fields[2].rsplit(":", 1)[1]) != {"0"}:
            continue
        port = int(fields[1].rsplit(":", 1)[1], 16)
        ports.setdefault(port, set()).add(int(fields[9]))
    return ports


def parse_proc_net_udp_drops(text: str, port: int) -> int:
    """Datagrams the kernel dropped at the UDP sockets whose local port is port (the `drops` column,
    from /proc/net/udp or udp6): a receiver that did not keep up overflowed its socket buffer."""
    total = 0
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 13 and int(fields[1].rsplit(":", 1)[1], 16) == port:
            total += int(fields[-1])
    return total


def _proc_net(ns_pid: int | None) -> str:
    """/proc/net of this process, or of ns_pid: each shows the sockets of its own network namespace.

    The harness sees the listeners of a forwarder inside a namespace through the
    forwarder's own /proc/PID/net, without entering the namespace.
    """
    return "/proc/net" if ns_pid is None else f"/proc/{ns_pid}/net"


def udp_listeners(ns_pid: int | None = None) -> dict[int, set[int]]:
    """{port: socket inodes} of unconnected (listening) UDP sockets in this (or ns_pid's) network namespace."""
    out: dict[int, set[int]] = {}
    base = _proc_net(ns_pid)
    for name in (f"{base}/udp", f"{base}/udp6"):
        try:
            for port, inodes in parse_proc_net_udp_bound(Path(name).read_text()).items():
                out.setdefault(port, set()).update(inodes)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


def wait_udp_bound(port: int, timeout_s: float, alive: Callable[[], bool] | None = None,
                   pids: Iterable[int] = ()) -> None:
    """Block until an unconnected UDP socket is bound to port (held by one of pids, if given)."""
    deadline = time.monotonic() + timeout_s
    owners = list(pids)
    while True:
        inodes = udp_listeners(owners[0] if owners else None).get(port, set())
        if inodes and (not owners or any(inodes & socket_inodes(p) for p in owners)):
            return
        if alive is not None and not alive():
            raise TimeoutError(f"the process that should receive UDP on port {port} exited")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no UDP socket bound to port {port} after {timeout_s:.0f} s")
        time.sleep(0.02)


def listeners(ns_pid: int | None = None) -> dict[int, set[int]]:
    """{port: socket inodes} of TCP listeners in this (or ns_pid's) network namespace (IPv4 and IPv6)."""
    out: dict[int, set[int]] = {}
    base = _proc_net(ns_pid)
    for name in (f"{base}/tcp", f"{base}/tcp6"):
        try:
            for port, inodes in parse_proc_net_tcp_listeners(Path(name).read_text()).items():
                out.setdefault(port, set()).update(inodes)
        except (FileNotFoundError, ProcessLookupError):
            pass
    return out


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process pid holds open (from /proc/PID/fd)."""
    out: set[int] = set()
    try:
        fds = os.scandir(f"/proc/{pid}/fd")
    except (FileNotFoundError, PermissionError):
        return out
    with fds:
        for fd in fds:
            try:
                target = os.readlink(fd.path)
            except OSError:
                continue
            if target.startswith("socket:["):
                out.add(int(target[8:-1]))
    return out


def wait_listening(port: int, timeout_s: float, alive: Callable[[], bool] | None = None,
                   pid: int | None = None, others: Callable[[], Iterable[int]] | None = None) -> None:
    """Block until a socket LISTENs on port (owned by pid or one of others(), if given), without connecting.

    Nothing connects: a probe through a forwarder would reach the target, and
    `iperf3 -s -1` takes any connection as its one test and exits. A LISTEN
    socket accepts connections (into its backlog) from the moment it exists.
    With pid, the listeners are read in pid's network namespace (it may live in another).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        inodes = listeners(pid).get(port, set())
        if inodes and (pid is None or inodes & socket_inodes(pid)
                       or (others is not None and any(inodes & socket_inodes(o) for o in others()))):
            return
        if alive is not None and not alive():
            raise TimeoutError(f"the process that should listen on port {port} exited")
        if time.monotonic() > deadline:
            owner = f" by pid {pid}" if pid is not None else ""
            raise TimeoutError(f"nothing listening on port {port}{owner} after {timeout_s:.0f} s")
        time.sleep(0.02)


def wait_accepts(port: int, timeout_s: float, host: str = LOOPBACK,
                 alive: Callable[[], bool] | None = None) -> None:
    """Block until a TCP connect to host:port succeeds (the listener accepts)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            pass
        if alive is not None and not alive():
            raise TimeoutError(f"the process that should listen on {host}:{port} exited")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{host}:{port} does not accept connections after {timeout_s:.0f} s")
        time.sleep(0.05)


def who_listens(port: int) -> str:
    """Best-effort description of the process listening on port (for error messages)."""
    try:
        out = subprocess.run(["ss", "-Htlnp", f"sport = :{port}"], capture_output=True, text=True,
                             timeout=5).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.splitlines()[0] if out else ""


def busy_ports(ports: Iterable[int], host: str = LOOPBACK) -> list[int]:
    """The ports among `ports` that cannot be bound now."""
    return [p for p in ports if not port_bindable(p, host)]
