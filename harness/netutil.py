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


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port the kernel just handed out and released (fine on loopback)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


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


def udp_listeners() -> dict[int, set[int]]:
    """{port: socket inodes} of unconnected (listening) UDP sockets in this network namespace."""
    out: dict[int, set[int]] = {}
    for name in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            for port, inodes in parse_proc_net_udp_bound(Path(name).read_text()).items():
                out.setdefault(port, set()).update(inodes)
        except FileNotFoundError:
            pass
    return out


def wait_udp_bound(port: int, timeout_s: float, alive: Callable[[], bool] | None = None,
                   pids: Iterable[int] = ()) -> None:
    """Block until an unconnected UDP socket is bound to port (held by one of pids, if given)."""
    deadline = time.monotonic() + timeout_s
    owners = list(pids)
    while True:
        inodes = udp_listeners().get(port, set())
        if inodes and (not owners or any(inodes & socket_inodes(p) for p in owners)):
            return
        if alive is not None and not alive():
            raise TimeoutError(f"the process that should receive UDP on port {port} exited")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no UDP socket bound to port {port} after {timeout_s:.0f} s")
        time.sleep(0.02)


def listeners() -> dict[int, set[int]]:
    """{port: socket inodes} of TCP listeners in this network namespace (IPv4 and IPv6)."""
    out: dict[int, set[int]] = {}
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            for port, inodes in parse_proc_net_tcp_listeners(Path(name).read_text()).items():
                out.setdefault(port, set()).update(inodes)
        except FileNotFoundError:
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
                   pid: int | None = None) -> None:
    """Block until a socket LISTENs on port (owned by pid, if given), without connecting to it.

    Nothing connects: a probe through a forwarder would reach the target, and
    `iperf3 -s -1` takes any connection as its one test and exits. A LISTEN
    socket accepts connections (into its backlog) from the moment it exists.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        inodes = listeners().get(port, set())
        if inodes and (pid is None or inodes & socket_inodes(pid)):
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
