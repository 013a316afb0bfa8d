"""TCP forwarding through a real `portunus-standalone` process, on both pump paths.

The same conformance checks run against the splice path and the copy path
(PORTUNUS_DISABLE_SPLICE=1), as trio runs its stream conformance suite
against every stream implementation.
"""

from __future__ import annotations

import hashlib
import random
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.net import (
    ExchangeServer,
    echo_handler,
    exchange,
    free_port,
    free_port_range,
    random_payload,
    recv_all,
    tcp_server,
    wait_port,
)
from tests.support.proc import run_cli, stats_of

MODES = {"splice": {}, "copy": {"PORTUNUS_DISABLE_SPLICE": "1"}}


def rule_toml(name: str, listen_port: int, target: str, extra: str = "", listen_addr: str = "127.0.0.1") -> str:
    return (f'[[rule]]\nname = "{name}"\nlisten_addr = "{listen_addr}"\nlisten_port = {listen_port}\n'
            f'target = "{target}"\n{extra}\n')


@pytest.fixture(params=list(MODES))
def mode(request):
    return request.param


def test_200_concurrent_random_payloads_keep_integrity(standalone, mode):
    """200 connections, random sizes up to 8 MiB each way, SHA-256 equal on both ends."""
    rng = random.Random(20261125 + len(mode))
    sizes = {}
    lock = threading.Lock()

    def reply_size(tag: bytes) -> int:
        with lock:
            return sizes[tag][1]

    server = ExchangeServer(reply_size, rng)
    listen = free_port()
    metrics = f"127.0.0.1:{free_port()}"
    standalone(rule_toml("bulk", listen, f"127.0.0.1:{server.port}"), env=MODES[mode],
               metrics_addr=metrics, wait_ports=[listen])
    n = 200
    before = stats_of(metrics)["rules"]["bulk"]  # the readiness probe is one connection already
    jobs = []
    for i in range(n):
        tag = hashlib.sha256(f"{mode}-{i}".encode()).digest()[:16]
        up, down = rng.randint(0, 8 << 20), rng.randint(0, 8 << 20)
        sizes[tag] = (up, down)
        jobs.append((tag, random_payload(up, rng)))
    try:
        with ThreadPoolExecutor(max_workers=n) as pool:
            results = list(pool.map(lambda j: exchange(listen, j[1], j[0]), jobs))
        deadline = time.monotonic() + 30  # the server records a result after its own EOF
        while len(server.results) < n and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.close()
    assert not server.errors
    for (tag, _payload), (sent_sha, got_sha) in zip(jobs, results, strict=True):
        server_got, server_sent = server.results[tag]
        assert server_got == sent_sha, "client -> target bytes differ"
        assert got_sha == server_sent, "target -> client bytes differ"
    snap = stats_of(metrics)["rules"]["bulk"]
    assert snap["bytes_in"] == sum(16 + up for up, _ in sizes.values())
    assert snap["bytes_out"] == sum(down for _, down in sizes.values())
    assert snap["connections_total"] - before["connections_total"] == n
    assert snap["connections_active"] == 0
    path_field = "splice_connections" if mode == "splice" else "copy_connections"
    assert snap[path_field] - before[path_field] == n


def test_half_close_client_first(standalone, mode):
    """Client shuts its write side and still receives the full response."""
    response = random_payload(3 << 20, random.Random(1))

    def handler(conn: socket.socket) -> None:
        request = recv_all(conn)  # until the client's FIN arrives through the forwarder
        conn.sendall(hashlib.sha256(request).digest() + response)
        conn.shutdown(socket.SHUT_WR)

    with tcp_server(handler) as srv:
        listen = free_port()
        standalone(rule_toml("hc", listen, f"127.0.0.1:{srv.port}"), env=MODES[mode], wait_ports=[listen])
        request = random_payload(1 << 20, random.Random(2))
        with socket.create_connection(("127.0.0.1", listen), timeout=20) as c:
            c.sendall(request)
            c.shutdown(socket.SHUT_WR)
            got = recv_all(c)
    assert got == hashlib.sha256(request).digest() + response


def test_half_close_target_first(standalone, mode):
    """Target finishes sending first; the client -> target direction keeps flowing."""
    greeting = b"hello, then I stop talking"
    received = {}

    def handler(conn: socket.socket) -> None:
        conn.sendall(greeting)
        conn.shutdown(socket.SHUT_WR)
        received["data"] = recv_all(conn)

    with tcp_server(handler) as srv:
        listen = free_port()
        standalone(rule_toml("hc2", listen, f"127.0.0.1:{srv.port}"), env=MODES[mode], wait_ports=[listen])
        payload = random_payload(2 << 20, random.Random(3))
        with socket.create_connection(("127.0.0.1", listen), timeout=20) as c:
            assert recv_all(c) == greeting  # EOF from the target arrived as EOF here
            c.sendall(payload)  # ... and we can still send
            c.shutdown(socket.SHUT_WR)
            c.settimeout(20)
            deadline = time.monotonic() + 20
            while "data" not in received and time.monotonic() < deadline:
                time.sleep(0.02)
    assert received["data"] == payload


def test_target_down_closes_client_promptly_and_counts(standalone):
    dead = free_port()
    with tcp_server(echo_handler) as live:
        p_dead, p_live = free_port(), free_port()
        metrics = f"127.0.0.1:{free_port()}"
        standalone(rule_toml("dead", p_dead, f"127.0.0.1:{dead}") + rule_toml("live", p_live, f"127.0.0.1:{live.port}"),
                   metrics_addr=metrics, wait_ports=[p_dead, p_live])
        for _ in range(3):
            t0 = time.monotonic()
            # The forwarder resets the client once no target answers. On loopback
            # that RST can land before connect() has even returned (non-blocking
            # connect + SO_ERROR), so a reset at connect is the same outcome.
            try:
                with socket.create_connection(("127.0.0.1", p_dead), timeout=5) as c:
                    assert c.recv(1) == b""
            except ConnectionResetError:
                pass
            assert time.monotonic() - t0 < 2.0
        # the forwarder keeps serving
        with socket.create_connection(("127.0.0.1", p_live), timeout=5) as c:
            c.sendall(b"ping")
            assert c.recv(4) == b"ping"
        snap = stats_of(metrics)["rules"]
        assert snap["dead"]["connect_failures"] == 3
        assert snap["live"]["connect_failures"] == 0


def test_failover_by_priority(standalone):
    dead = free_port()

    def whoami(conn: socket.socket) -> None:
        conn.sendall(b"backup")

    with tcp_server(whoami) as backup, tcp_server(lambda c: c.sendall(b"other")) as low:
        listen = free_port()
        metrics = f"127.0.0.1:{free_port()}"
        toml = (f'[[rule]]\nname = "fo"\nlisten_addr = "127.0.0.1"\nlisten_port = {listen}\n'
                f'targets = [\n  {{ host = "127.0.0.1", port = {low.port}, priority = 9 }},\n'
                f'  {{ host = "127.0.0.1", port = {backup.port}, priority = 5 }},\n'
                f'  {{ host = "127.0.0.1", port = {dead}, priority = 1 }},\n]\n')
        standalone(toml, metrics_addr=metrics, wait_ports=[listen])
        with socket.create_connection(("127.0.0.1", listen), timeout=10) as c:
            assert recv_all(c) == b"backup"  # dead (prio 1) failed over to prio 5, not prio 9
        assert stats_of(metrics)["rules"]["fo"]["failovers"] == 1


def test_dns_target_resolved_at_connect(standalone):
    with tcp_server(echo_handler, host="127.0.0.1") as srv:
        listen = free_port()
        standalone(rule_toml("dns", listen, f"localhost:{srv.port}"), wait_ports=[listen])
        with socket.create_connection(("127.0.0.1", listen), timeout=5) as c:
            c.sendall(b"named")
            c.shutdown(socket.SHUT_WR)
            assert recv_all(c) == b"named"


def test_ipv6_listener_and_target(standalone):
    with tcp_server(echo_handler, host="::1") as srv:
        listen = free_port(host="::1")
        standalone(rule_toml("v6", listen, f"[::1]:{srv.port}", listen_addr="::1"), wait_ports=[])
        wait_port(listen, host="::1")
        with socket.create_connection(("::1", listen), timeout=5) as c:
            c.sendall(b"six")
            c.shutdown(socket.SHUT_WR)
            assert recv_all(c) == b"six"


def test_port_range_maps_by_offset(standalone):
    n = 5
    servers = []
    target_start = free_port_range(n)
    for i in range(n):
        port = target_start + i
        servers.append(tcp_server(lambda c, p=port: c.sendall(str(p).encode()), port=port))
    listen_start = free_port_range(n)
    with servers[0], servers[1], servers[2], servers[3], servers[4]:
        toml = (f'[[rule]]\nname = "range"\nlisten_addr = "127.0.0.1"\n'
                f'listen_ports = "{listen_start}-{listen_start + n - 1}"\n'
                f'target = "127.0.0.1:{target_start}-{target_start + n - 1}"\n')
        standalone(toml, wait_ports=[listen_start + i for i in range(n)])
        for i in range(n):
            with socket.create_connection(("127.0.0.1", listen_start + i), timeout=5) as c:
                assert recv_all(c) == str(target_start + i).encode()


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_protocol_header_bytes(standalone, version):
    seen = {}

    def handler(conn: socket.socket) -> None:
        seen["data"] = recv_all(conn)

    with tcp_server(handler) as srv:
        listen = free_port()
        toml = (f'[[rule]]\nname = "pp"\nlisten_addr = "127.0.0.1"\nlisten_port = {listen}\n'
                f'targets = [{{ host = "127.0.0.1", port = {srv.port}, proxy_protocol = "{version}" }}]\n')
        standalone(toml, wait_ports=[listen])
        with socket.create_connection(("127.0.0.1", listen), timeout=5) as c:
            src_port = c.getsockname()[1]
            c.sendall(b"payload")
            c.shutdown(socket.SHUT_WR)
            recv_all(c)
        deadline = time.monotonic() + 5
        while "data" not in seen and time.monotonic() < deadline:
            time.sleep(0.01)
    # (wait_port's probe connection also reached the target, with its own header; ours is last)
    if version == "v1":
        expected = f"PROXY TCP4 127.0.0.1 127.0.0.1 {src_port} {listen}\r\n".encode() + b"payload"
    else:
        expected = (b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11, 0x00, 12])
                    + bytes([127, 0, 0, 1, 127, 0, 0, 1]) + src_port.to_bytes(2, "big")
                    + listen.to_bytes(2, "big") + b"payload")
    assert seen["data"] == expected


def test_bind_failure_exits_1_naming_rule(tmp_path):
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    port = blocker.getsockname()[1]
    try:
        cfg = tmp_path / "r.toml"
        cfg.write_text(rule_toml("taken", port, "127.0.0.1:1"))
        r = run_cli("portunus-standalone", "--config", str(cfg))
        assert r.returncode == 1
        assert f'error: rule "taken": cannot listen on tcp 127.0.0.1:{port}' in r.stderr
    finally:
        blocker.close()


def test_reload_good_and_bad(standalone):
    with tcp_server(echo_handler) as a, tcp_server(lambda c: c.sendall(b"B")) as b:
        p1, p2, p3 = free_port(), free_port(), free_port()
        v1 = rule_toml("keep", p1, f"127.0.0.1:{a.port}") + rule_toml("drop", p2, f"127.0.0.1:{a.port}")
        proc = standalone(v1, wait_ports=[p1, p2])
        # a long-lived connection on the listener that survives the reload
        live = socket.create_connection(("127.0.0.1", p1), timeout=5)
        live.sendall(b"before")
        assert live.recv(6) == b"before"

        v2 = rule_toml("keep", p1, f"127.0.0.1:{a.port}") + rule_toml("new", p3, f"127.0.0.1:{b.port}")
        proc.reload(v2)
        proc.wait_log("reloaded")
        wait_port(p3)
        with socket.create_connection(("127.0.0.1", p3), timeout=5) as c:
            assert recv_all(c) == b"B"
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", p2), timeout=2).close()
        live.sendall(b"after")
        assert live.recv(5) == b"after"

        # a bad file keeps the running rules and says why
        proc.reload('[[rule]]\nname = "keep"\nlisten_port = 0\ntarget = "127.0.0.1:1"\n')
        out = proc.wait_log("reload rejected")
        assert "listen_port: port 0 out of range" in out
        live.sendall(b"still")
        assert live.recv(5) == b"still"
        with socket.create_connection(("127.0.0.1", p3), timeout=5) as c:
            assert recv_all(c) == b"B"
        # a file whose listener cannot bind is rejected whole
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        proc.reload(v2 + rule_toml("clash", blocker.getsockname()[1], "127.0.0.1:1"))
        out = proc.wait_log('rule "clash": cannot listen')
        blocker.close()
        with socket.create_connection(("127.0.0.1", p3), timeout=5) as c:
            assert recv_all(c) == b"B"
        live.close()
        assert proc.stop() == 0


def test_sigterm_drains_then_exits_0(standalone):
    release = threading.Event()

    def slow(conn: socket.socket) -> None:
        conn.recv(1)
        release.wait(10)
        conn.sendall(b"finished")

    with tcp_server(slow) as srv:
        listen = free_port()
        proc = standalone('[global]\nshutdown_drain_secs = 10\n' + rule_toml("d", listen, f"127.0.0.1:{srv.port}"),
                          wait_ports=[listen])
        c = socket.create_connection(("127.0.0.1", listen), timeout=10)
        c.sendall(b"x")
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.wait_log("draining 1 connection")
        with pytest.raises(OSError):  # no longer accepting
            socket.create_connection(("127.0.0.1", listen), timeout=2).close()
        release.set()
        assert recv_all(c) == b"finished"
        c.close()
        assert proc.proc.wait(timeout=10) == 0


def test_drain_deadline_resets_stuck_connections(standalone):
    with tcp_server(lambda c: time.sleep(30)) as srv:
        listen = free_port()
        proc = standalone('[global]\nshutdown_drain_secs = 0.5\n' + rule_toml("d", listen, f"127.0.0.1:{srv.port}"),
                          wait_ports=[listen])
        c = socket.create_connection(("127.0.0.1", listen), timeout=10)
        time.sleep(0.2)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            assert c.recv(1) == b""
        except ConnectionResetError:
            pass
        assert proc.proc.wait(timeout=10) == 0
        assert time.monotonic() - t0 < 5
        c.close()


def test_metrics_endpoint_exposes_rule_counters(standalone):
    import urllib.request

    with tcp_server(echo_handler) as srv:
        listen = free_port()
        maddr = f"127.0.0.1:{free_port()}"
        standalone(rule_toml("m", listen, f"127.0.0.1:{srv.port}"), metrics_addr=maddr, wait_ports=[listen])
        with socket.create_connection(("127.0.0.1", listen), timeout=5) as c:
            c.sendall(b"12345")
            c.shutdown(socket.SHUT_WR)
            recv_all(c)
        time.sleep(0.1)
        body = urllib.request.urlopen(f"http://{maddr}/metrics", timeout=5).read().decode()
    assert 'portunus_rule_bytes_total{direction="in",rule="m"} 5.0' in body
    assert 'portunus_rule_bytes_total{direction="out",rule="m"} 5.0' in body
    assert 'portunus_rule_connections_total{rule="m"}' in body


def test_stats_without_instance_is_a_clear_error():
    r = run_cli("portunus-standalone", "stats", "--once", "--metrics-addr", f"127.0.0.1:{free_port()}")
    assert r.returncode == 1 and "cannot read stats" in r.stderr


def test_1000_concurrent_connections(standalone, mode):
    """1,000 connections open at once, each echoing its own random bytes intact."""
    n = 1000
    with tcp_server(echo_handler) as srv:
        listen = free_port()
        standalone(rule_toml("many", listen, f"127.0.0.1:{srv.port}"), env=MODES[mode], wait_ports=[listen])
        rng = random.Random(7)
        socks, payloads = [], []
        try:
            for _ in range(n):
                s = socket.create_connection(("127.0.0.1", listen), timeout=30)
                socks.append(s)
            for s in socks:  # all 1,000 are open now; each sends its payload
                p = rng.randbytes(rng.randint(1, 64 * 1024))
                payloads.append(p)
                s.sendall(p)
                s.shutdown(socket.SHUT_WR)
            for s, p in zip(socks, payloads, strict=True):
                assert recv_all(s) == p
        finally:
            for s in socks:
                s.close()
        assert srv.accepted >= n
