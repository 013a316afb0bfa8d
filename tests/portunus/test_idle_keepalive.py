"""Idle timeouts and TCP keepalive of forwarded connections (issue 15, item 8).

A connection with no bytes either way for `idle_timeout_secs` is closed; a
busy one is not. Both sockets of a forwarded connection carry TCP keepalive
(`tcp_keepalive_secs`), so a peer that vanished without a FIN or RST (here:
its packets dropped by a real iptables rule) is noticed and the connection
torn down instead of being held forever.
"""

from __future__ import annotations

import socket
import subprocess
import time

import pytest

from tests.portunus.test_tcp_forwarding import MODES
from tests.support.net import echo_handler, free_port, tcp_server

pytestmark = pytest.mark.slow


def rule_toml(listen: int, target: int, extra: str) -> str:
    return (f'[[rule]]\nname = "r"\nlisten_addr = "127.0.0.1"\nlisten_port = {listen}\n'
            f'target = "127.0.0.1:{target}"\n{extra}\n')


@pytest.mark.parametrize("mode", list(MODES))
def test_idle_connection_is_closed_and_a_busy_one_is_not(standalone, mode):
    with tcp_server(echo_handler) as srv:
        listen = free_port()
        standalone(rule_toml(listen, srv.port, "idle_timeout_secs = 1.5"), env=MODES[mode],
                   wait_ports=[listen])
        idle = socket.create_connection(("127.0.0.1", listen), timeout=10)
        busy = socket.create_connection(("127.0.0.1", listen), timeout=10)
        for s in (idle, busy):
            s.sendall(b"hello")
            assert s.recv(5) == b"hello"
        start = time.monotonic()
        while time.monotonic() - start < 4.0:  # the busy one talks every 0.3 s
            busy.sendall(b"ping")
            assert busy.recv(4) == b"ping"
            time.sleep(0.3)
        idle.settimeout(5)
        assert idle.recv(1) == b""  # closed by the forwarder (FIN): idle > 1.5 s
        busy.sendall(b"still")
        assert busy.recv(5) == b"still"
        idle.close()
        busy.close()


def _keepalive_timers(port: int) -> list[str]:
    out = subprocess.run(["ss", "-tnoH", "state", "established", f"( sport = :{port} )"],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if "keepalive" in line]


def test_both_sockets_carry_keepalive_and_a_vanished_target_is_dropped(standalone):
    with tcp_server(echo_handler) as srv:
        listen = free_port()
        standalone(rule_toml(listen, srv.port, "tcp_keepalive_secs = 1\nidle_timeout_secs = 3600"),
                   wait_ports=[listen])
        c = socket.create_connection(("127.0.0.1", listen), timeout=10)
        c.sendall(b"x")
        assert c.recv(1) == b"x"
        time.sleep(2.5)  # upstream keepalive is armed once a connection is > 1 s old
        assert _keepalive_timers(listen), "client-facing socket has no keepalive timer"
        # The forwarder's upstream socket: its peer port is the target's.
        out = subprocess.run(["ss", "-tnoH", "state", "established", f"( dport = :{srv.port} )"],
                             capture_output=True, text=True, check=True).stdout
        assert "keepalive" in out, out
        # The target vanishes: every packet it sends (keepalive ACKs included) is dropped.
        rule = ["OUTPUT", "-o", "lo", "-p", "tcp", "--sport", str(srv.port), "-j", "DROP"]
        subprocess.run(["iptables", "-I", *rule], check=True)
        try:
            c.settimeout(20)
            t0 = time.monotonic()
            with pytest.raises(ConnectionResetError):
                while c.recv(1):  # the forwarder gives up on the target and resets the client
                    pass
            # idle 1 s + 6 probes 1 s apart (+ scheduling slack), far below the 1 h idle timeout
            assert time.monotonic() - t0 < 15
        finally:
            subprocess.run(["iptables", "-D", *rule], check=False)
            c.close()
