"""`[global] workers = N`: N worker processes behind one portunus-standalone, checked as a user would.

Each test starts a real portunus-standalone with two workers and talks to it
over real sockets. SO_REUSEPORT spreads connections over the workers by a
hash of their addresses, so tests open enough connections that both workers
get some (the stats' per_worker block shows the spread) and then check that
limits hold in TOTAL and that counters are the sum.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from tests.support.net import echo_handler, free_port, free_ports, recv_all, tcp_server
from tests.support.proc import run_cli
from tests.support.wait import wait_for

MIB = 1024 * 1024

pytestmark = pytest.mark.slow


def toml(rules: str, workers: int = 2) -> str:
    return f'[global]\nworkers = {workers}\nshutdown_drain_secs = 5\n{rules}'


def rule(name: str, port: int, target: int, limits: str = "", extra: str = "") -> str:
    rl = f"rate_limit = {{ {limits} }}\n" if limits else ""
    return (f'[[rule]]\nname = "{name}"\nlisten_addr = "127.0.0.1"\nlisten_port = {port}\n'
            f'target = "127.0.0.1:{target}"\n{rl}{extra}\n')


def stats(metrics: str) -> dict:
    r = run_cli("portunus-standalone", "stats", "--once", "--metrics-addr", metrics)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def worker_pids(pid: int) -> list[int]:
    """Children of the supervisor that are workers (not multiprocessing's resource tracker)."""
    out = []
    children = [c for task in os.listdir(f"/proc/{pid}/task")  # a restart comes from another thread
                for c in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    for child in children:
        cmd = Path(f"/proc/{child}/cmdline").read_bytes()
        if b"spawn_main" in cmd:
            out.append(int(child))
    return sorted(out)


def test_two_workers_share_the_port_and_sum_their_counters(standalone):
    with tcp_server(echo_handler) as srv:
        listen, mport = free_ports(2)
        metrics = f"127.0.0.1:{mport}"
        proc = standalone(toml(rule("web", listen, srv.port)), metrics_addr=metrics, wait_ports=[listen])
        assert len(worker_pids(proc.proc.pid)) == 2
        sent = 0
        for i in range(60):
            payload = os.urandom(100 + i)
            with socket.create_connection(("127.0.0.1", listen), timeout=10) as s:
                s.sendall(payload)
                s.shutdown(socket.SHUT_WR)
                assert recv_all(s) == payload
            sent += len(payload)
        snap = wait_for(lambda: (lambda s: s if s["rules"]["web"]["connections_active"] == 0 else None)(stats(metrics)),
                        what="connections closed")
    entry = snap["rules"]["web"]
    assert snap["workers"] == 2
    assert entry["connections_total"] == 60
    assert entry["bytes_in"] == sent and entry["bytes_out"] == sent
    spread = [w["connections_total"] for w in snap["per_worker"]]
    assert sum(spread) == 60 and min(spread) > 0, spread  # both workers served connections


def test_concurrency_limit_holds_in_total_across_workers(standalone):
    with tcp_server(echo_handler) as srv:
        listen, mport = free_ports(2)
        metrics = f"127.0.0.1:{mport}"
        standalone(toml(rule("lim", listen, srv.port, "concurrent_connections = 4")),
                   metrics_addr=metrics, wait_ports=[listen])
        held, refused = [], 0
        try:
            for _ in range(16):
                try:  # a refused connection is reset: sometimes before connect() returns
                    s = socket.create_connection(("127.0.0.1", listen), timeout=10)
                except ConnectionResetError:
                    refused += 1
                    continue
                s.settimeout(5)
                try:
                    s.sendall(b"x")
                    if s.recv(1) == b"x":
                        held.append(s)
                        continue
                except OSError:
                    pass
                refused += 1
                s.close()
            snap = stats(metrics)
        finally:
            for s in held:
                s.close()
    assert len(held) == 4 and refused == 12
    assert snap["rules"]["lim"]["rejected"] == {"concurrency": 12}
    assert snap["rules"]["lim"]["connections_active"] == 4


def test_bandwidth_cap_holds_in_total_across_workers(standalone):
    """1 MiB/s on the rule, 12 parallel uploads spread over two workers: 1 MiB/s in total, not 2."""
    cap = 1 * MIB
    received = [0]
    lock = threading.Lock()

    def sink(conn: socket.socket) -> None:
        while True:
            data = conn.recv(1 << 20)
            if not data:
                return
            with lock:
                received[0] += len(data)

    with tcp_server(sink) as srv:
        listen, mport = free_ports(2)
        metrics = f"127.0.0.1:{mport}"
        standalone(toml(rule("cap", listen, srv.port, f"bandwidth_in_bps = {cap}")),
                   metrics_addr=metrics, wait_ports=[listen])
        stop = threading.Event()

        def upload() -> None:
            chunk = b"\x5a" * 65536
            with socket.create_connection(("127.0.0.1", listen), timeout=30) as s:
                s.settimeout(0.5)
                while not stop.is_set():
                    try:
                        s.send(chunk)
                    except TimeoutError:
                        continue
                    except OSError:
                        return

        threads = [threading.Thread(target=upload, daemon=True) for _ in range(12)]
        for t in threads:
            t.start()
        time.sleep(1.0)  # the bucket starts empty; let every upload start
        with lock:
            start = received[0]
        t0 = time.monotonic()
        time.sleep(5.0)
        with lock:
            moved = received[0] - start
        elapsed = time.monotonic() - t0
        spread = [w["connections_active"] for w in stats(metrics)["per_worker"]]
        stop.set()
        for t in threads:
            t.join(5)
    assert min(spread) > 0, spread  # both workers carried capped connections
    rate = moved / elapsed
    assert rate == pytest.approx(cap, rel=0.10), f"{rate:.0f} B/s vs cap {cap}"


def test_a_worker_that_dies_is_restarted_with_the_rules(standalone):
    with tcp_server(echo_handler) as srv:
        listen, mport = free_ports(2)
        metrics = f"127.0.0.1:{mport}"
        proc = standalone(toml(rule("web", listen, srv.port)), metrics_addr=metrics, wait_ports=[listen])
        before = worker_pids(proc.proc.pid)
        os.kill(before[0], signal.SIGKILL)  # a worker of the forwarder this test started
        proc.wait_log("restarting it")
        after = wait_for(lambda: (lambda p: p if len(p) == 2 and before[0] not in p else None)(
            worker_pids(proc.proc.pid)), what="a replacement worker")
        wait_for(lambda: stats(metrics)["workers"] == 2, what="stats from both workers")
        for i in range(30):  # every connection works, whichever worker the kernel picks
            with socket.create_connection(("127.0.0.1", listen), timeout=10) as s:
                s.sendall(b"ping %d" % i)
                s.shutdown(socket.SHUT_WR)
                assert recv_all(s) == b"ping %d" % i
        assert sorted(after) != sorted(before)


def test_reload_and_drain_with_workers(standalone):
    with tcp_server(echo_handler) as srv:
        a, b, mport = free_ports(3)
        metrics = f"127.0.0.1:{mport}"
        proc = standalone(toml(rule("a", a, srv.port)), metrics_addr=metrics, wait_ports=[a])
        held = socket.create_connection(("127.0.0.1", a), timeout=10)
        held.sendall(b"before")
        assert held.recv(6) == b"before"
        proc.reload(toml(rule("a", a, srv.port) + rule("b", b, srv.port)))
        proc.wait_log("reloaded")
        for port in (a, b):
            for i in range(10):
                with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                    s.sendall(b"x%d" % i)
                    s.shutdown(socket.SHUT_WR)
                    assert recv_all(s) == b"x%d" % i
        held.sendall(b"after")  # the connection from before the reload still works
        assert held.recv(5) == b"after"
        proc.reload(toml(rule("a", a, srv.port) + 'bogus = 1\n'))  # a bad file keeps the rules
        proc.wait_log("reload rejected")
        with socket.create_connection(("127.0.0.1", b), timeout=10) as s:
            s.sendall(b"still")
            s.shutdown(socket.SHUT_WR)
            assert recv_all(s) == b"still"
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        held.sendall(b"drain")  # drained, not cut: the open connection finishes its exchange
        assert held.recv(5) == b"drain"
        held.close()
        assert proc.proc.wait(timeout=15) == 0
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", a), timeout=2)


def test_workers_setting_is_validated(tmp_path):
    path = tmp_path / "w.toml"
    for value, ok in (("2", True), ('"auto"', True), ("0", False), ("65", False), ('"many"', False)):
        path.write_text(f"[global]\nworkers = {value}\n" + rule("r", free_port(), 9))
        r = run_cli("portunus-standalone", "--config", str(path), "--check")
        assert (r.returncode == 0) == ok, (value, r.stdout, r.stderr)
        if not ok:
            assert r.returncode == 2 and "workers" in r.stderr


def test_udp_flows_spread_over_workers_and_udp_max_flows_holds_in_total(standalone):
    from tests.support.net import UdpEchoServer

    with UdpEchoServer() as echo:
        listen = free_port(socket.SOCK_DGRAM)
        mport = free_port()
        metrics = f"127.0.0.1:{mport}"
        standalone(toml(f'[[rule]]\nname = "dns"\nprotocol = "udp"\nlisten_addr = "127.0.0.1"\n'
                        f'listen_port = {listen}\ntarget = "127.0.0.1:{echo.port}"\nudp_max_flows = 10\n'),
                   metrics_addr=metrics, wait_ports=[])  # [] = wait for the start-up line only
        clients = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(30)]
        answered = 0
        try:
            for i, c in enumerate(clients):
                c.settimeout(0.3)  # a refused flow's datagram is dropped: no answer
                c.sendto(b"q%d" % i, ("127.0.0.1", listen))
                try:
                    answered += c.recv(64) == b"q%d" % i
                except TimeoutError:
                    pass
            snap = stats(metrics)
        finally:
            for c in clients:
                c.close()
    entry = snap["rules"]["dns"]
    assert answered == 10 and entry["connections_active"] == 10, (answered, entry)
    assert entry["rejected"] == {"max_flows": 20}
    spread = [w["connections_active"] for w in snap["per_worker"]]
    assert min(spread) > 0, spread  # 30 source ports hash to both workers' sockets
