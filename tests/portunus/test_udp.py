"""UDP forwarding through a real `portunus-standalone` process.

Flows, idle expiry, udp_max_flows, ICMP eviction, first-packet limits,
per-datagram bandwidth policing, port ranges, DNS targets and reload, all
with real sockets on loopback.
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
import urllib.request

import pytest

from tests.support.net import UdpEchoServer, free_port, free_port_range, free_ports
from tests.support.proc import run_cli
from tests.support.wait import wait_for

HEAD = "[global]\nshutdown_drain_secs = 1\n\n"
# How long a client waits for an echo before calling the datagram lost.
# Loopback answers in well under a millisecond; 2 s covers a busy host.
REPLY_TIMEOUT_S = 2.0
# For "nothing comes back" checks: long enough that a late reply would show.
SILENCE_S = 0.5


def udp_rule(name: str, listen: str, target: str, extra: str = "") -> str:
    key = "listen_ports" if "-" in listen else "listen_port"
    value = f'"{listen}"' if "-" in listen else listen
    return (f'[[rule]]\nname = "{name}"\nprotocol = "udp"\nlisten_addr = "127.0.0.1"\n'
            f'{key} = {value}\ntarget = "{target}"\n{extra}\n')


def launch(standalone, toml: str, metrics: str):
    proc = standalone(toml, metrics_addr=metrics)
    wait_for(lambda: "running" in proc.log() or proc.proc.poll() is not None, what="start")
    assert proc.proc.poll() is None, proc.log()
    return proc


def stats(metrics: str) -> dict:
    with urllib.request.urlopen(f"http://{metrics}/stats", timeout=5) as r:
        return json.load(r)["rules"]


def client() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.settimeout(REPLY_TIMEOUT_S)
    return s


def ask(sock: socket.socket, port: int, payload: bytes, timeout_s: float = REPLY_TIMEOUT_S) -> bytes | None:
    """Send one datagram to the forwarder; return the reply, or None if none came."""
    sock.settimeout(timeout_s)
    sock.sendto(payload, ("127.0.0.1", port))
    try:
        data, addr = sock.recvfrom(65535)
    except TimeoutError:
        return None
    assert addr == ("127.0.0.1", port), "replies must come from the listening address"
    return data


def test_echo_100_concurrent_flows_without_loss(standalone):
    """100 flows, 40 rounds of one datagram each (8-1400 B): every byte echoed, in order."""
    port, mport = free_ports(2)
    metrics = f"127.0.0.1:{mport}"
    rng = random.Random(4)
    with UdpEchoServer() as echo:
        launch(standalone, HEAD + udp_rule("echo", str(port), f"127.0.0.1:{echo.port}"), metrics)
        clients = [client() for _ in range(100)]
        sent_bytes = 0
        try:
            for rnd in range(40):
                payloads = []
                for i, c in enumerate(clients):
                    body = f"{i}:{rnd}:".encode() + os.urandom(rng.randint(8, 1400))
                    payloads.append(body)
                    c.sendto(body, ("127.0.0.1", port))
                    sent_bytes += len(body)
                for c, body in zip(clients, payloads, strict=True):
                    data, addr = c.recvfrom(65535)
                    assert data == body
                    assert addr == ("127.0.0.1", port)
            st = stats(metrics)["echo"]
        finally:
            for c in clients:
                c.close()
        sources = len(echo.sources)
    assert st["connections_total"] == 100 and st["connections_active"] == 100
    assert st["bytes_in"] == st["bytes_out"] == sent_bytes
    assert st["dropped"] == {} and st["rejected"] == {}
    assert sources == 100  # one upstream socket per flow


def test_idle_flows_expire_and_active_ones_do_not(standalone):
    port, mport = free_ports(2)
    metrics = f"127.0.0.1:{mport}"
    with UdpEchoServer() as echo:
        launch(standalone, HEAD + udp_rule("idle", str(port), f"127.0.0.1:{echo.port}",
                                           "udp_flow_idle_secs = 0.5"), metrics)
        busy, quiet = client(), client()
        assert ask(busy, port, b"b0") == b"b0"
        assert ask(quiet, port, b"q0") == b"q0"
        for i in range(8):  # busy speaks every 0.2 s for 1.6 s: never idle for 0.5 s
            time.sleep(0.2)
            assert ask(busy, port, b"b%d" % i) == b"b%d" % i
        st = stats(metrics)["idle"]
        assert st["connections_active"] == 1, st  # quiet expired, busy lives
        assert len(echo.sources) == 2
        busy.close()
        wait_for(lambda: stats(metrics)["idle"]["connections_active"] == 0, timeout_s=3, what="expiry")
        assert ask(quiet, port, b"again") == b"again"  # a new flow, from a new upstream socket
        quiet.close()
        sources = len(echo.sources)
    st = stats(metrics)["idle"]
    assert st["connections_total"] == 3
    assert sources == 3


def test_max_flows_drops_new_flows_and_keeps_existing_ones(standalone):
    port, mport = free_ports(2)
    metrics = f"127.0.0.1:{mport}"
    with UdpEchoServer() as echo:
        launch(standalone, HEAD + udp_rule("max", str(port), f"127.0.0.1:{echo.port}",
                                           "udp_max_flows = 3\nudp_flow_idle_secs = 1.5"), metrics)
        clients = [client() for _ in range(5)]
        try:
            assert [ask(c, port, b"hi", SILENCE_S) for c in clients] == [b"hi"] * 3 + [None] * 2
            # The three admitted flows keep working while the others are refused.
            assert [ask(c, port, b"again", SILENCE_S) for c in clients] == [b"again"] * 3 + [None] * 2
            st = stats(metrics)["max"]
            assert st["rejected"] == {"max_flows": 4}
            assert st["connections_active"] == 3
            # Once the admitted flows go idle and expire, a new client gets in.
            wait_for(lambda: stats(metrics)["max"]["connections_active"] == 0, what="expiry")
            assert ask(clients[4], port, b"late") == b"late"
        finally:
            for c in clients:
                c.close()


def test_icmp_port_unreachable_evicts_the_flow_and_is_counted(standalone):
    port, dead, mport = free_ports(3, socket.SOCK_DGRAM)
    metrics = f"127.0.0.1:{mport}"
    launch(standalone, HEAD + udp_rule("dead", str(port), f"127.0.0.1:{dead}"), metrics)
    c = client()
    try:
        assert ask(c, port, b"anyone?", SILENCE_S) is None
        st = wait_for(lambda: (s := stats(metrics)["dead"])["connect_failures"] == 1 and s, what="eviction")
        assert st["connections_active"] == 0 and st["connections_total"] == 1
        # The target comes up: the next datagram starts a fresh flow that works.
        with UdpEchoServer(port=dead):
            assert ask(c, port, b"now?") == b"now?"
    finally:
        c.close()
    st = stats(metrics)["dead"]
    assert st["connections_total"] == 2 and st["connect_failures"] == 1


def test_first_packet_limits_refuse_exactly_the_excess(standalone):
    rate_port, conc_port, mport = free_ports(3, socket.SOCK_DGRAM)
    metrics = f"127.0.0.1:{mport}"
    with UdpEchoServer() as echo:
        target = f"127.0.0.1:{echo.port}"
        launch(standalone, HEAD
               + udp_rule("rate", str(rate_port), target,
                          "rate_limit = { new_connections_per_sec = 0.1, new_connections_burst = 3 }")
               + udp_rule("conc", str(conc_port), target, "rate_limit = { concurrent_connections = 2 }"),
               metrics)
        clients = [client() for _ in range(5)]
        try:
            assert [ask(c, rate_port, b"r", SILENCE_S) for c in clients] == [b"r"] * 3 + [None] * 2
            assert [ask(c, conc_port, b"c", SILENCE_S) for c in clients] == [b"c"] * 2 + [None] * 3
            # Limits apply to new flows only: admitted flows keep going.
            assert [ask(c, rate_port, b"r2") for c in clients[:3]] == [b"r2"] * 3
            assert [ask(c, conc_port, b"c2") for c in clients[:2]] == [b"c2"] * 2
            st = stats(metrics)
        finally:
            for c in clients:
                c.close()
    assert st["rate"]["rejected"] == {"connection_rate": 2}
    assert st["conc"]["rejected"] == {"concurrency": 3}
    assert st["rate"]["connections_active"] == 3 and st["conc"]["connections_active"] == 2


def test_bandwidth_cap_polices_each_datagram_and_counts_drops(standalone):
    """Offer ~5x the cap for 2 s: what passes is the cap (+ burst), the rest is dropped and counted."""
    cap = 100_000  # bytes/s
    burst = 10_000
    port, mport = free_ports(2)
    metrics = f"127.0.0.1:{mport}"
    size = 1000
    with UdpEchoServer() as echo:
        launch(standalone, HEAD + udp_rule(
            "bw", str(port), f"127.0.0.1:{echo.port}",
            f"rate_limit = {{ bandwidth_in_bps = {cap}, bandwidth_in_burst = {burst} }}"), metrics)
        c = client()
        c.setblocking(False)
        sent = 0
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < 2.0:
            if sent < elapsed * 5 * cap:
                c.sendto(b"x" * size, ("127.0.0.1", port))
                sent += size
            else:
                time.sleep(0.001)
        duration = time.monotonic() - start
        time.sleep(0.2)
        c.close()
        st = stats(metrics)["bw"]
    passed = st["bytes_in"]
    dropped = st["dropped"].get("bandwidth_in", 0)
    assert passed + dropped * size == sent
    assert passed <= burst + cap * duration + size
    # The offered load was far above the cap the whole time: the cap is reached.
    assert passed >= cap * (duration - 0.1)


def test_port_range_to_a_dns_target_range(standalone):
    n = 4
    listen = free_port_range(n, socket.SOCK_DGRAM)
    mport = free_port()
    metrics = f"127.0.0.1:{mport}"
    base = free_port_range(n, socket.SOCK_DGRAM)
    echoes = [UdpEchoServer(port=base + i) for i in range(n)]
    try:
        # "localhost" is a DNS name: resolved off the engine thread when each flow starts.
        launch(standalone, HEAD + udp_rule("range", f"{listen}-{listen + n - 1}",
                                           f"localhost:{base}-{base + n - 1}"), metrics)
        c = client()
        for i in range(n):
            assert ask(c, listen + i, b"port %d" % i) == b"port %d" % i
        c.close()
        counts = [e.datagrams for e in echoes]
    finally:
        for e in echoes:
            e.close()
    assert counts == [1] * n  # each listen port went to its own target port
    assert stats(metrics)["range"]["connections_total"] == n


def test_reload_moves_flows_to_a_new_target_and_keeps_unchanged_ones(standalone):
    a_port, b_port, mport = free_ports(3, socket.SOCK_DGRAM)
    metrics = f"127.0.0.1:{mport}"
    with UdpEchoServer() as one, UdpEchoServer() as two:
        def config(target_a: int, idle: float) -> str:
            return (HEAD + udp_rule("a", str(a_port), f"127.0.0.1:{target_a}")
                    + udp_rule("b", str(b_port), f"127.0.0.1:{one.port}", f"udp_flow_idle_secs = {idle}"))

        proc = launch(standalone, config(one.port, 30), metrics)
        c = client()
        assert ask(c, a_port, b"a1") == b"a1" and ask(c, b_port, b"b1") == b"b1"
        proc.reload(config(two.port, 60))
        proc.wait_log("reloaded")
        assert ask(c, a_port, b"a2") == b"a2" and ask(c, b_port, b"b2") == b"b2"
        c.close()
        st = stats(metrics)
        one_count, two_count = one.datagrams, two.datagrams
    assert two_count == 1  # a's flow followed its new target
    assert one_count == 3  # a1, b1, b2: b's flow was kept (only its idle time changed)
    assert st["a"]["connections_total"] == 2 and st["b"]["connections_total"] == 1


def test_udp_keys_are_validated():
    bad = ('[defaults]\nudp_max_flows = -1\n\n[[rule]]\nname = "u"\nprotocol = "udp"\nlisten_port = 5000\n'
           'target = "127.0.0.1:5001"\nudp_flow_idle_secs = 0\nrate_limit = { bandwidth_out_bps = 0 }\n')
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
        f.write(bad)
        f.flush()
        r = run_cli("portunus-standalone", "--config", f.name, "--check")
    assert r.returncode == 2
    assert "[defaults]: udp_max_flows: must be an integer from 1 to 1000000 (flows), got -1" in r.stderr
    assert 'rule "u" (rule #1): udp_flow_idle_secs: must be a number > 0' in r.stderr
    assert "rate_limit.bandwidth_out_bps: must be > 0" in r.stderr


@pytest.mark.parametrize("family", ["ipv6"])
def test_ipv6_listener_and_target(standalone, family):
    port = free_port(socket.SOCK_DGRAM, "::1")
    mport = free_port()
    metrics = f"127.0.0.1:{mport}"
    with UdpEchoServer(host="::1") as echo:
        toml = (HEAD + f'[[rule]]\nname = "v6"\nprotocol = "udp"\nlisten_addr = "::1"\nlisten_port = {port}\n'
                f'target = "[::1]:{echo.port}"\n')
        launch(standalone, toml, metrics)
        c = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        c.settimeout(REPLY_TIMEOUT_S)
        c.sendto(b"six", ("::1", port))
        data, addr = c.recvfrom(100)
        c.close()
    assert data == b"six" and addr[:2] == ("::1", port)


# ---------------------------------------------------------------- batching (recvmmsg / sendmmsg / GSO)

def big_client() -> socket.socket:
    """A client with 4 MiB buffers: a window of 64 KiB datagrams and their echoes fit."""
    s = client()
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        s.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
    return s


def collect(socks: list[socket.socket], expect: int, timeout_s: float = 5.0,
            settle_s: float = SILENCE_S) -> dict[socket.socket, list[bytes]]:
    """Datagrams each socket received, until `expect` came (then settle_s more for strays) or timeout."""
    import selectors
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    got: dict[socket.socket, list[bytes]] = {s: [] for s in socks}
    n = 0
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for key, _ in sel.select(0.05):
            try:
                while True:
                    got[key.fileobj].append(key.fileobj.recv(65535))
                    n += 1
            except BlockingIOError:
                pass
        if n >= expect:
            deadline = min(deadline, time.monotonic() + settle_s)
    sel.close()
    return got


IO_MODES = {
    "mmsg+gso": ({}, "recvmmsg/sendmmsg, 64 datagrams per call, UDP GSO on"),
    "mmsg": ({"PORTUNUS_DISABLE_UDP_GSO": "1"}, "recvmmsg/sendmmsg, 64 datagrams per call, UDP GSO off"),
    "portable": ({"PORTUNUS_DISABLE_UDP_MMSG": "1"}, "recvfrom/sendto"),
}


@pytest.mark.parametrize("mode", IO_MODES.values(), ids=IO_MODES.keys())
def test_batches_keep_every_datagram_boundary_and_order_both_ways(standalone, mode):
    """Random sizes 1..65507 in windows of 16, then runs of equal sizes (GSO-sized): every echo is
    the datagram sent, in order, and the counters match to the byte and the datagram."""
    env, io_line = mode
    port, mport = free_ports(2)
    metrics = f"127.0.0.1:{mport}"
    rng = random.Random(14)
    windows = [[rng.randint(1, 65507) for _ in range(16)] for _ in range(12)]
    windows += [[1] * 64, [64] * 64, [1400] * 64, [1200] * 30 + [17] + [1200] * 20, [1452] * 3 + [1453] * 3]
    with UdpEchoServer() as echo:
        proc = standalone(HEAD + udp_rule("b", str(port), f"127.0.0.1:{echo.port}"), metrics_addr=metrics, env=env)
        wait_for(lambda: "running" in proc.log() or proc.proc.poll() is not None, what="start")
        assert io_line in proc.log()
        c = big_client()
        sent: list[bytes] = []
        back: list[bytes] = []
        try:
            for sizes in windows:
                msgs = [os.urandom(n) for n in sizes]
                for m in msgs:  # back to back: they queue at the listener and leave as one batch
                    c.sendto(m, ("127.0.0.1", port))
                sent += msgs
                back += collect([c], len(msgs), settle_s=0.0)[c]
        finally:
            c.close()
        st = stats(metrics)["b"]
        with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=5) as r:
            prom = r.read().decode()
    assert [len(m) for m in back] == [len(m) for m in sent]  # no merge, no split, no reorder
    assert back == sent
    total = sum(len(m) for m in sent)
    assert st["datagrams_in"] == st["datagrams_out"] == len(sent)
    assert st["bytes_in"] == st["bytes_out"] == total
    assert st["dropped"] == {}
    for direction in ("in", "out"):
        assert f'portunus_rule_datagrams_total{{direction="{direction}",rule="b"}} {len(sent)}.0' in prom


def test_2000_flows_from_distinct_ports_with_the_table_bounded_by_udp_max_flows(standalone):
    """2,000 clients send at once to a rule with udp_max_flows = 1500: exactly 1500 flows, the
    other 500 refused (each datagram counted), admitted flows keep working, then all expire."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4500:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    port, mport = free_ports(2)
    metrics = f"127.0.0.1:{mport}"
    n_clients, max_flows = 2000, 1500
    with UdpEchoServer() as echo:
        launch(standalone, HEAD + udp_rule("many", str(port), f"127.0.0.1:{echo.port}",
                                           f"udp_max_flows = {max_flows}\nudp_flow_idle_secs = 2"), metrics)
        clients = [client() for _ in range(n_clients)]
        try:
            for rnd in range(2):
                for i, c in enumerate(clients):
                    c.sendto(b"%d:%d" % (i, rnd), ("127.0.0.1", port))
                got = collect(clients, max_flows, timeout_s=15)
                answered = [i for i, c in enumerate(clients) if got[c]]
                assert len(answered) == max_flows, f"round {rnd}: {len(answered)} answered"
                assert all(got[clients[i]] == [b"%d:%d" % (i, rnd)] for i in answered)
                if rnd == 0:
                    first = answered
                else:
                    assert answered == first  # the same flows: refused clients stay refused
            st = stats(metrics)["many"]
            sources = len(echo.sources)
            wait_for(lambda: stats(metrics)["many"]["connections_active"] == 0, timeout_s=10, what="expiry")
        finally:
            for c in clients:
                c.close()
    assert st["connections_active"] == st["connections_total"] == max_flows
    assert st["rejected"] == {"max_flows": 2 * (n_clients - max_flows)}
    assert st["datagrams_in"] == st["datagrams_out"] == 2 * max_flows
    assert sources == max_flows


def test_first_packet_limits_hold_when_many_new_clients_arrive_in_one_batch(standalone):
    """50 clients x 3 datagrams, interleaved, in one burst: concurrency 10 admits the first 10
    clients; a rate of 5 new flows (burst) admits 5; every refused datagram is counted."""
    conc_port, rate_port, mport = free_ports(3, socket.SOCK_DGRAM)
    metrics = f"127.0.0.1:{mport}"
    with UdpEchoServer() as echo:
        target = f"127.0.0.1:{echo.port}"
        launch(standalone, HEAD
               + udp_rule("conc", str(conc_port), target, "rate_limit = { concurrent_connections = 10 }")
               + udp_rule("rate", str(rate_port), target,
                          "rate_limit = { new_connections_per_sec = 0.01, new_connections_burst = 5 }"),
               metrics)
        clients = [client() for _ in range(50)]
        try:
            results = {}
            for name, port, admitted in (("conc", conc_port, 10), ("rate", rate_port, 5)):
                for rnd in range(3):
                    for i, c in enumerate(clients):
                        c.sendto(b"%s %d %d" % (name.encode(), i, rnd), ("127.0.0.1", port))
                got = collect(clients, 3 * admitted)
                results[name] = [i for i, c in enumerate(clients) if got[c]]
                assert all(len(got[clients[i]]) == 3 for i in results[name])
            st = stats(metrics)
        finally:
            for c in clients:
                c.close()
    assert results == {"conc": list(range(10)), "rate": list(range(5))}
    assert st["conc"]["rejected"] == {"concurrency": 40 * 3}
    assert st["rate"]["rejected"] == {"connection_rate": 45 * 3}
    assert st["conc"]["datagrams_in"] == 30 and st["rate"]["datagrams_in"] == 15
