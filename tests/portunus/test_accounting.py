"""Portunus's byte and datagram counters equal what iperf3's receiver counted.

Real iperf3 through a real `portunus-standalone`, TCP and UDP, with and
without a bandwidth cap. What iperf3 sends besides its test data is known
exactly and added to its figure:

* UDP: the client's 4-byte "connect" datagram and the server's 4-byte reply
  (iperf3 3.x UDP handshake) travel through the UDP rule. The control
  connection (TCP, same port number) goes through a relay that holds each
  client->server chunk CONTROL_DELAY_S: iperf3's receiver stops counting when
  the client's "test end" arrives, and without the delay that message can
  overtake the last datagrams (read after it, they are forwarded and counted
  by Portunus but not by iperf3).
* TCP: a relay in front sends iperf3's first connection (control) straight
  to the server and every later one (the data stream) through Portunus, so
  the rule sees one data connection: a 37-byte cookie, then the test data.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import urllib.request

import pytest

from tests.support.net import TcpServer, free_ports
from tests.support.wait import wait_for

IPERF3 = "iperf3"
# iperf3's UDP connect message and its reply (UDP_CONNECT_MSG / UDP_CONNECT_REPLY): 4 bytes each.
UDP_HANDSHAKE_BYTES = 4
# The cookie iperf3 sends first on every connection (COOKIE_SIZE).
COOKIE_BYTES = 37
# Both iperf3 ends: 4 MiB socket buffers, so the receiver itself drops nothing at these rates.
WINDOW = "4M"
# Runs of the TCP test until one had nothing in flight at its end (see the test).
TCP_TRIES = 3
# How long the UDP test's control relay holds client->server bytes (see the module docstring).
CONTROL_DELAY_S = 0.3
HEAD = '[global]\nshutdown_drain_secs = 1\n\n'


def rule(name: str, proto: str, port: int, target: int, extra: str = "") -> str:
    return (f'[[rule]]\nname = "{name}"\nprotocol = "{proto}"\nlisten_addr = "127.0.0.1"\n'
            f'listen_port = {port}\ntarget = "127.0.0.1:{target}"\n{extra}\n')


def stats(metrics: str) -> dict:
    with urllib.request.urlopen(f"http://{metrics}/stats", timeout=5) as r:
        return json.load(r)["rules"]


def run_iperf(port: int, server_port: int, *args: str) -> dict:
    """iperf3 -s -1 on server_port, a client to port with args; return the client's end summary."""
    server = subprocess.Popen([IPERF3, "-s", "-1", "-B", "127.0.0.1", "-p", str(server_port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _listening(server_port), what="iperf3 server")
        out = subprocess.run([IPERF3, "-c", "127.0.0.1", "-p", str(port), "-J", "-w", WINDOW, *args],
                             capture_output=True, text=True, timeout=60)
        doc = json.loads(out.stdout)
        assert not doc.get("error"), doc["error"]
        return doc["end"]
    finally:
        server.terminate()
        server.wait(timeout=10)


def _listening(port: int) -> bool:
    """A LISTEN socket on port, from /proc/net/tcp (a probe connection would be iperf3 -1's one test)."""
    with open("/proc/net/tcp") as f:
        rows = [line.split() for line in f.readlines()[1:]]
    return any(r[1].endswith(f":{port:04X}") and r[3] == "0A" for r in rows)


def settled(metrics: str, name: str, key: str, value: int) -> dict:
    """The rule's counters once `key` reached value (the last datagrams may still be in the engine)."""
    try:
        return wait_for(lambda: (s := stats(metrics)[name])[key] == value and s, timeout_s=3, what=key)
    except Exception:
        return stats(metrics)[name]


@pytest.mark.parametrize("cap", [None, 500_000], ids=["uncapped", "capped"])
def test_udp_bytes_and_datagrams_equal_the_iperf3_receivers(standalone, cap):
    """20 Mbit/s of 1000-byte datagrams for 2 s; capped: 0.5 MB/s, the rest dropped and counted."""
    port, target, mport = free_ports(3)
    metrics = f"127.0.0.1:{mport}"
    limit = f"rate_limit = {{ bandwidth_in_bps = {cap} }}" if cap else ""
    proc = standalone(HEAD + rule("data", "udp", port, target, limit), metrics_addr=metrics)
    proc.wait_ready()
    with DelayedRelay(target, CONTROL_DELAY_S, port=port):
        end = run_iperf(port, target, "-u", "-b", "20M", "-l", "1000", "-t", "2", "-O", "0")
    recv, sent = end["sum_received"], end["sum_sent"]
    received = recv["packets"] - recv["lost_packets"]
    st = settled(metrics, "data", "datagrams_in", received + 1)
    assert st["datagrams_in"] == received + 1
    assert st["bytes_in"] == recv["bytes"] + UDP_HANDSHAKE_BYTES
    assert st["datagrams_out"] == 1 and st["bytes_out"] == UDP_HANDSHAKE_BYTES
    dropped = st["dropped"].get("bandwidth_in", 0)
    # Every datagram iperf3 sent was either forwarded or dropped by the cap, and counted once.
    assert st["datagrams_in"] + dropped == sent["packets"] + 1
    if cap:
        assert dropped > sent["packets"] // 2  # 2.5 MB/s offered, 0.5 MB/s passed
    else:
        assert dropped == 0 and recv["lost_packets"] == 0


class DelayedRelay(TcpServer):
    """A TCP relay to `dest_port` that passes client->server bytes delay_s late, in order."""

    def __init__(self, dest_port: int, delay_s: float, port: int = 0) -> None:
        self._dest = dest_port
        self._delay_s = delay_s
        super().__init__(self._relay, port=port)

    def _relay(self, conn: socket.socket) -> None:
        import queue
        import time
        up = socket.create_connection(("127.0.0.1", self._dest))
        held: queue.SimpleQueue[tuple[float, bytes]] = queue.SimpleQueue()

        def release() -> None:
            try:
                while True:
                    due, data = held.get()
                    time.sleep(max(0.0, due - time.monotonic()))
                    if not data:
                        up.shutdown(socket.SHUT_WR)
                        return
                    up.sendall(data)
            except OSError:
                return  # the server closed first: nothing left to pass on

        back = threading.Thread(target=_pump, args=(up, conn), daemon=True)
        out = threading.Thread(target=release, daemon=True)
        back.start()
        out.start()
        try:
            while True:
                data = conn.recv(1 << 16)
                held.put((time.monotonic() + self._delay_s, data))
                if not data:
                    break
        except OSError:
            held.put((0.0, b""))
        out.join(timeout=30)
        back.join(timeout=30)
        up.close()


class ControlBypass(TcpServer):
    """A TCP relay: the first connection goes to `first_port`, every later one to `rest_port`."""

    def __init__(self, first_port: int, rest_port: int) -> None:
        self._lock = threading.Lock()
        self._n = 0
        self._ports = (first_port, rest_port)
        super().__init__(self._relay)

    def _relay(self, conn: socket.socket) -> None:
        with self._lock:
            dest = self._ports[0] if self._n == 0 else self._ports[1]
            self._n += 1
        up = socket.create_connection(("127.0.0.1", dest))
        back = threading.Thread(target=_pump, args=(up, conn), daemon=True)
        back.start()
        _pump(conn, up)
        back.join(timeout=30)
        up.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(1 << 16):
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass


@pytest.mark.parametrize("cap", [None, 4_000_000], ids=["splice", "capped-copy"])
def test_tcp_bytes_equal_the_iperf3_receivers(standalone, tmp_path, cap):
    """10 Mbit/s in 16 KiB writes for 2 s over the data connection; a 4 MB/s cap (not binding) forces
    the copy path. iperf3's receiver stops counting when the client says the test ended, so a run
    where bytes were still in flight then (sender's count > receiver's: a busy host) cannot be
    compared; it is run again, up to TCP_TRIES times."""
    limit = f"rate_limit = {{ bandwidth_in_bps = {cap} }}" if cap else ""
    for attempt in range(TCP_TRIES):
        port, target, mport = free_ports(3)
        metrics = f"127.0.0.1:{mport}"
        proc = standalone(HEAD + rule("data", "tcp", port, target, limit), metrics_addr=metrics)
        proc.wait_ready()
        with ControlBypass(target, port) as relay:
            end = run_iperf(relay.port, target, "-b", "10M", "-l", "16K", "-t", "2", "-O", "0")
        recv = end["sum_received"]
        st = wait_for(lambda m=metrics: (s := stats(m)["data"])["connections_active"] == 0 and s,
                      what="connection end")
        proc.stop()
        if end["sum_sent"]["bytes"] == recv["bytes"] or attempt == TCP_TRIES - 1:
            break
    assert end["sum_sent"]["bytes"] == recv["bytes"], f"bytes in flight at the end of all {TCP_TRIES} runs"
    assert st["connections_total"] == 1  # the data connection only
    assert st["bytes_in"] == recv["bytes"] + COOKIE_BYTES, (end["sum_sent"], recv, st)
    assert st["bytes_out"] == 0
    assert st["copy_connections" if cap else "splice_connections"] == 1
