"""Active health checks through a real `portunus-standalone`: real targets that stop,
blackhole (a listener whose full backlog drops every SYN) and come back."""

from __future__ import annotations

import socket
import time

import pytest

from tests.support.net import TcpServer, free_port
from tests.support.proc import scrape, stats_of
from tests.support.wait import wait_for

INTERVAL_S = 1.0
# The forwarder's connect timeout: a connection dialing a blackholed target stalls this long.
CONNECT_TIMEOUT_S = 5.0


class Named(TcpServer):
    """Answers a connection's first bytes with its name, then closes (probes send nothing)."""

    def __init__(self, name: str, port: int = 0) -> None:
        self.name = name
        super().__init__(self._handle, port=port)

    def _handle(self, conn: socket.socket) -> None:
        if conn.recv(16):
            conn.sendall(self.name.encode())


class Blackhole:
    """A listener on `port` that accepts nothing: backlog 0, filled, so new SYNs are dropped."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(0)
        self.fillers = []
        for _ in range(2):
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            self.fillers.append(c)
        probe = socket.socket()
        probe.settimeout(0.5)
        try:
            with pytest.raises(TimeoutError):  # the blackhole really drops connections
                probe.connect(("127.0.0.1", port))
        finally:
            probe.close()

    def close(self) -> None:
        for c in self.fillers:
            c.close()
        self.sock.close()


def which(port: int) -> tuple[str, float]:
    """(name of the target reached through `port`, seconds it took)."""
    t0 = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"hi")
        name = s.recv(100).decode()
    return name, time.monotonic() - t0


def health_toml(port: int, a_port: int, b_port: int, extra: str = "") -> str:
    return (f'{extra}[[rule]]\nname = "r"\nlisten_addr = "127.0.0.1"\nlisten_port = {port}\n'
            f'health_check_interval_secs = {INTERVAL_S}\n'
            f'targets = [{{host = "127.0.0.1", port = {a_port}, priority = 0}},\n'
            f'           {{host = "127.0.0.1", port = {b_port}, priority = 1}}]\n')


@pytest.mark.parametrize("failure", ["blackhole", "stopped"])
def test_failed_target_is_skipped_within_two_intervals_and_preferred_again(standalone, failure):
    port, mport, a_port = free_port(), free_port(), free_port()
    metrics = f"127.0.0.1:{mport}"
    a, b = Named("A", a_port), Named("B")
    hole: Blackhole | None = None
    try:
        st = standalone(health_toml(port, a_port, b.port), metrics_addr=metrics, wait_ports=[])
        assert which(port)[0] == "A"
        target_a = f"127.0.0.1:{a_port}"

        a.close()
        if failure == "blackhole":
            hole = Blackhole(a_port)
        t0 = time.monotonic()
        time.sleep(max(0.0, t0 + 2 * INTERVAL_S + 0.3 - time.monotonic()))  # two intervals (+ scheduling)
        rule = stats_of(metrics)["rules"]["r"]
        assert rule["target_health"] == {target_a: "down", f"127.0.0.1:{b.port}": "up"}, rule
        failovers = rule["failovers"]
        for _ in range(3):
            name, took_s = which(port)
            assert name == "B"
            assert took_s < CONNECT_TIMEOUT_S / 2, f"connection stalled {took_s:.1f} s dialing the dead target"
        assert stats_of(metrics)["rules"]["r"]["failovers"] == failovers, "a new connection still dialed A"
        assert f'rule "r": target {target_a} is down' in st.log()
        text = scrape(metrics)
        assert f'portunus_rule_target_up{{rule="r",target="{target_a}"}} 0.0' in text
        assert f'portunus_rule_target_transitions_total{{rule="r",target="{target_a}",to="down"}} 1.0' in text

        if hole is not None:
            hole.close()
            hole = None
        a = Named("A", a_port)
        wait_for(lambda: stats_of(metrics)["rules"]["r"]["target_health"][target_a] == "up", 3 * INTERVAL_S + 2,
                 "A to be up again")
        assert which(port)[0] == "A"
        assert f'rule "r": target {target_a} is up' in st.log()
        text = scrape(metrics)
        assert f'portunus_rule_target_up{{rule="r",target="{target_a}"}} 1.0' in text
        assert f'portunus_rule_target_transitions_total{{rule="r",target="{target_a}",to="up"}} 1.0' in text
    finally:
        if hole is not None:
            hole.close()
        a.close()
        b.close()


def test_every_target_down_still_tries_them_in_priority_order(standalone):
    port, mport, a_port, b_port = free_port(), free_port(), free_port(), free_port()
    metrics = f"127.0.0.1:{mport}"
    a, b = Named("A", a_port), Named("B", b_port)
    try:
        st = standalone(health_toml(port, a_port, b_port), metrics_addr=metrics, wait_ports=[])
        a.close()
        b.close()
        wait_for(lambda: set(stats_of(metrics)["rules"]["r"].get("target_health", {}).values()) == {"down"},
                 3 * INTERVAL_S + 2, "both targets down")
        assert 'rule "r": every target is down' in st.log()
        before = stats_of(metrics)["rules"]["r"]
        b = Named("B", b_port)  # back, but the checks need two passed probes to believe it
        assert which(port)[0] == "B"
        after = stats_of(metrics)["rules"]["r"]
        assert after["failovers"] == before["failovers"] + 1, "A was not tried first"
        assert after["connect_failures"] == before["connect_failures"]
    finally:
        a.close()
        b.close()


def test_two_workers_each_probe_and_stats_merge(standalone):
    port, mport, a_port = free_port(), free_port(), free_port()
    metrics = f"127.0.0.1:{mport}"
    a, b = Named("A", a_port), Named("B")
    try:
        standalone(health_toml(port, a_port, b.port, extra="[global]\nworkers = 2\n"), metrics_addr=metrics,
                   wait_ports=[])
        target_a = f"127.0.0.1:{a_port}"
        rule = wait_for(lambda: (r := stats_of(metrics)["rules"].get("r")) and r.get("health_probes", {}).get(
            target_a, 0) >= 2 and r, 10, "probes from the workers")
        assert rule["health_checked"][target_a] == 2 and rule["target_health"][target_a] == "up"
        a.close()
        wait_for(lambda: stats_of(metrics)["rules"]["r"]["target_health"][target_a] == "down",
                 2 * INTERVAL_S + 2, "A down in both workers")
        assert {which(port)[0] for _ in range(6)} == {"B"}
    finally:
        a.close()
        b.close()


def test_dns_target_is_resolved_and_probed(standalone):
    """A target given by name ("localhost") is resolved off the loop, then probed."""
    port, mport, a_port = free_port(), free_port(), free_port()
    metrics = f"127.0.0.1:{mport}"
    a = Named("A", a_port)
    try:
        standalone(f'[[rule]]\nname = "r"\nlisten_addr = "127.0.0.1"\nlisten_port = {port}\n'
                   f'health_check_interval_secs = {INTERVAL_S}\n'
                   f'targets = [{{host = "localhost", port = {a_port}}}]\n', metrics_addr=metrics, wait_ports=[])
        target = f"localhost:{a_port}"
        rule = wait_for(lambda: (r := stats_of(metrics)["rules"]["r"])["health_probes"].get(target, 0) >= 3 and r,
                        10, "three probes")
        assert rule["target_health"] == {target: "up"} and rule["health_went_down"] == {target: 0}, rule
        assert which(port)[0] == "A"
        a.close()
        wait_for(lambda: stats_of(metrics)["rules"]["r"]["target_health"][target] == "down", 2 * INTERVAL_S + 2,
                 "the name's address to refuse")
    finally:
        a.close()
