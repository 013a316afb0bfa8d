"""Thousands of concurrent connections through one rule: intact bytes, bounded memory and threads.

5,000 connections with one worker and 10,000 with two, all open at once,
each echoing its own random bytes through a real portunus-standalone to the
harness's epoll echo server. While they are held: the forwarder's RSS per
process stays under 256 MiB, its processes have fewer than 64 threads in all,
and idle connections hold no splice pipes (a process may hold at most
20,000 fds here). These are bounds, not timings.
"""

from __future__ import annotations

import os
import random
import resource
import socket
from pathlib import Path

import pytest

from harness.measure.probe import open_echo_server
from tests.support.net import free_ports, recv_exact

RSS_LIMIT_BYTES = 256 * 1024 * 1024
THREAD_LIMIT = 64
# Pipes a process may gain while every connection is idle: none are needed
# (pipes are taken only while bulk bytes are in flight); one pair of slack.
IDLE_PIPE_FDS_GAINED_MAX = 2

pytestmark = pytest.mark.slow


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def process_tree(pid: int) -> list[int]:
    pids = [pid]
    for task in os.listdir(f"/proc/{pid}/task"):
        pids += [int(c) for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return pids


def status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def pipe_fds(pid: int) -> int:
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:"):
                n += 1
        except OSError:
            continue
    return n


@pytest.mark.parametrize(("connections", "workers"), [(5000, 1), (10000, 2)])
def test_thousands_of_concurrent_connections(standalone, tmp_path, connections, workers):
    raise_fd_limit()
    echo_port, listen = free_ports(2)
    rng = random.Random(connections)
    with open_echo_server(echo_port, tmp_path / "echo.log"):
        proc = standalone(f'[global]\nworkers = {workers}\n[[rule]]\nname = "many"\n'
                          f'listen_addr = "127.0.0.1"\nlisten_port = {listen}\n'
                          f'target = "127.0.0.1:{echo_port}"\n', wait_ports=[listen])
        socks: list[socket.socket] = []
        payloads: list[bytes] = []
        pipes_before = {pid: pipe_fds(pid) for pid in process_tree(proc.proc.pid)}
        try:
            for _ in range(connections):
                s = socket.create_connection(("127.0.0.1", listen), timeout=30)
                p = rng.randbytes(rng.randint(1, 512))
                s.sendall(b"E" + p)  # echo mode: the server answers b"E", then echoes
                socks.append(s)
                payloads.append(p)
            intact = sum(recv_exact(s, 1 + len(p)) == b"E" + p for s, p in zip(socks, payloads, strict=True))
            tree = process_tree(proc.proc.pid)
            rss = {pid: status(pid, "VmRSS") * 1024 for pid in tree}
            threads = sum(status(pid, "Threads") for pid in tree)
            pipes_gained = {pid: pipe_fds(pid) - pipes_before.get(pid, 0) for pid in tree}
            for s, p in zip(socks[::97], payloads[::97], strict=True):  # still open, still echoing
                s.sendall(p)
                assert recv_exact(s, len(p)) == p
        finally:
            for s in socks:
                s.close()
    assert intact == connections
    assert max(rss.values()) < RSS_LIMIT_BYTES, rss
    assert threads < THREAD_LIMIT, threads
    assert max(pipes_gained.values()) <= IDLE_PIPE_FDS_GAINED_MAX, pipes_gained


def test_copy_path_holds_1000_idle_connections_under_100_mib(standalone, tmp_path):
    """A capped rule runs on the copy path: idle connections there hold no buffer either."""
    raise_fd_limit()
    echo_port, listen = free_ports(2)
    with open_echo_server(echo_port, tmp_path / "echo.log"):
        proc = standalone(f'[[rule]]\nname = "capped"\nlisten_addr = "127.0.0.1"\nlisten_port = {listen}\n'
                          f'target = "127.0.0.1:{echo_port}"\nrate_limit = {{ bandwidth_in_bps = 10485760 }}\n',
                          wait_ports=[listen])
        socks = []
        try:
            for i in range(1000):
                s = socket.create_connection(("127.0.0.1", listen), timeout=30)
                s.sendall(b"E%04d" % i)
                socks.append(s)
            for i, s in enumerate(socks):
                assert recv_exact(s, 5) == b"E%04d" % i
            rss = status(proc.proc.pid, "VmRSS") * 1024
        finally:
            for s in socks:
                s.close()
    assert rss < 100 * 1024 * 1024, f"{rss / 2**20:.1f} MiB for 1,000 idle copy-path connections"
