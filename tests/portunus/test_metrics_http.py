"""The metrics endpoint under idle and slow connections (issue 15 item 8, the metrics server):
a real portunus-standalone, real sockets, threads counted in /proc."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request

from portunus.metrics_http import BACKLOG, MAX_CONNECTIONS, REQUEST_TIMEOUT_S
from tests.support.net import free_ports

IDLE_SOCKETS = MAX_CONNECTIONS + 44


def _start(standalone):
    rport, mport = free_ports(2)
    proc = standalone(f'[[rule]]\nname = "r"\nlisten_addr = "127.0.0.1"\nlisten_port = {rport}\n'
                      'target = "127.0.0.1:9"\n', metrics_addr=f"127.0.0.1:{mport}", wait_ports=[])
    return proc, mport


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def _scrape(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.status


def _closed_by_peer(s: socket.socket, timeout_s: float) -> bool:
    s.settimeout(timeout_s)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_listen_backlog(standalone) -> None:
    _, mport = _start(standalone)
    out = subprocess.run(["ss", "-ltnH", f"sport = :{mport}"], capture_output=True, text=True, check=True).stdout
    backlog = int(out.split()[2])  # Send-Q of a listening socket is its backlog
    assert backlog >= BACKLOG, out


def test_idle_and_trickling_sockets_cost_no_thread_and_are_closed(standalone) -> None:
    proc, mport = _start(standalone)
    assert _scrape(mport) == 200
    before = _threads(proc.proc.pid)
    idle = [socket.create_connection(("127.0.0.1", mport), timeout=5) for _ in range(IDLE_SOCKETS)]
    trickle = socket.create_connection(("127.0.0.1", mport), timeout=5)
    try:
        trickle.sendall(b"GET /metrics HTTP/1.1\r\n")
        time.sleep(0.5)
        assert _threads(proc.proc.pid) <= before + 2, "a thread per idle socket"
        # More idle sockets than the endpoint keeps open, and a scrape is still answered at once.
        assert _scrape(mport) == 200
        assert _closed_by_peer(idle[0], 1.0), "the longest-waiting socket makes room for new ones"
        # The rest are closed by the server once the request timeout passes, the trickler too.
        for s in [trickle, *idle[-5:]]:
            assert _closed_by_peer(s, REQUEST_TIMEOUT_S + 5)
    finally:
        for s in [trickle, *idle]:
            s.close()
    assert _scrape(mport) == 200
