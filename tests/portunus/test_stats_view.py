"""`portunus-standalone stats` live view: rows and rates from counters, and the real program in a pty."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pyte
import pytest

from portunus.stats_view import columns_for, format_row, header, human_rate, rule_rows
from tests.support.net import UdpEchoServer, free_port, free_ports
from tests.support.proc import BIN, Standalone
from tests.support.traffic import ByteSink

COLS, LINES = 120, 24


def _counters(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {"bytes_in": 0, "bytes_out": 0, "connections_active": 0, "connections_total": 0,
                               "connect_failures": 0, "protocol": "tcp", "listen": "127.0.0.1:1"}
    return {**base, **kw}


def test_rates_are_counter_deltas_over_elapsed_time() -> None:
    prev = {"rules": {"web": _counters(bytes_in=1000, bytes_out=500)}}
    cur = {"rules": {"web": _counters(bytes_in=5000, bytes_out=2500, connections_active=3, connections_total=7,
                                      connect_failures=1, rejected={"quota": 2}, dropped={}),
                     "dns": _counters(protocol="udp", connections_active=4, rate_in_bytes_per_s=12.5,
                                      dropped={"queue_full": 5})}}
    rows = {r.name: r for r in rule_rows(prev, cur, 2.0)}
    web, dns = rows["web"], rows["dns"]
    assert (web.in_bytes_per_s, web.out_bytes_per_s) == (2000.0, 1000.0)
    assert (web.connections, web.flows, web.total, web.errors) == (3, None, 7, 3)
    # New to this frame: the instance's own rate; UDP live entries are flows, not connections.
    assert (dns.in_bytes_per_s, dns.connections, dns.flows, dns.errors) == (12.5, None, 4, 5)
    # A rule re-created between frames (counters went down) shows no negative rate.
    again = rule_rows(cur, {"rules": {"web": _counters(bytes_in=10)}}, 1.0)[0]
    assert again.in_bytes_per_s == 0.0


def test_human_rate() -> None:
    assert [human_rate(v) for v in (0, 999, 1500, 12_345_678, 2.5e9)] == \
        ["0 B/s", "999 B/s", "1.50 KB/s", "12.3 MB/s", "2.50 GB/s"]


def test_narrow_terminals_drop_total_then_protocol() -> None:
    row = rule_rows(None, {"rules": {"a-rule-with-a-long-name": _counters(listen="[2001:db8::1]:65535")}}, 0)[0]
    assert header(columns_for(120)).split() == ["RULE", "PROTO", "LISTEN", "IN/s", "OUT/s", "CONNS", "FLOWS",
                                                "TOTAL", "ERRORS"]
    assert "TOTAL" not in header(columns_for(90)).split() and "PROTO" in header(columns_for(90)).split()
    narrow = columns_for(80)
    assert header(narrow).split() == ["RULE", "LISTEN", "IN/s", "OUT/s", "CONNS", "FLOWS", "ERRORS"]
    line = format_row(row, narrow)
    assert len(header(narrow)) < 80 and len(line) == len(header(narrow)), line
    assert line.startswith("a-rule-with-a-l~ ")  # a cut name says so


class _Traffic:
    """A TCP connection and a UDP flow kept busy through the forwarder until `stop`."""

    def __init__(self, tcp_port: int, udp_port: int) -> None:
        self._stop = threading.Event()
        self.tcp_bytes = 0
        self._threads = [threading.Thread(target=self._tcp, args=(tcp_port,), daemon=True),
                         threading.Thread(target=self._udp, args=(udp_port,), daemon=True)]
        for t in self._threads:
            t.start()

    def _tcp(self, port: int) -> None:
        chunk = b"t" * 16384
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            while not self._stop.is_set():
                s.sendall(chunk)  # ~1.6 MB/s: plenty to see, little load on a shared host
                self.tcp_bytes += len(chunk)
                time.sleep(0.01)

    def _udp(self, port: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("127.0.0.1", port))
            s.settimeout(0.05)
            while not self._stop.is_set():
                s.send(b"u" * 512)
                try:
                    s.recv(2048)
                except OSError:
                    pass

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[tuple[str, int, int]]:
    """A real portunus-standalone with a TCP and a UDP rule: (metrics addr, tcp port, udp port)."""
    sink, echo = ByteSink(), UdpEchoServer()
    tcp_port, metrics_port = free_ports(2)
    udp_port = free_port(socket.SOCK_DGRAM)
    toml = (f'[[rule]]\nname = "web"\nlisten_addr = "127.0.0.1"\nlisten_port = {tcp_port}\n'
            f'target = "127.0.0.1:{sink.port}"\n\n'
            f'[[rule]]\nname = "dns"\nprotocol = "udp"\nlisten_addr = "127.0.0.1"\nlisten_port = {udp_port}\n'
            f'target = "127.0.0.1:{echo.port}"\n')
    proc = Standalone(tmp_path, toml, metrics_addr=f"127.0.0.1:{metrics_port}", wait_ports=[])
    try:
        yield f"127.0.0.1:{metrics_port}", tcp_port, udp_port
    finally:
        proc.stop()
        sink.close()
        echo.close()


def _screen_until(child: pexpect.spawn, screen: pyte.Screen, stream: pyte.ByteStream, pred, timeout_s: float,
                  what: str) -> list[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            stream.feed(child.read_nonblocking(65536, timeout=0.2))
        except pexpect.TIMEOUT:
            pass
        lines = list(screen.display)
        if pred(lines):
            return lines
    raise AssertionError(f"timed out waiting for {what}; screen:\n" + "\n".join(screen.display))


def _row(lines: list[str], name: str) -> list[str] | None:
    for line in lines:
        if line.startswith(name + " "):
            # RULE PROTO LISTEN IN/s (value, unit) OUT/s (value, unit) CONNS FLOWS TOTAL ERRORS
            return line.split()
    return None


def _moving(row: list[str] | None) -> bool:
    return row is not None and not row[3].startswith("0") and row[4] in ("KB/s", "MB/s", "GB/s")


def test_live_view_in_a_pty_shows_rows_and_rates_and_quits_on_q(instance: tuple[str, int, int]) -> None:
    addr, tcp_port, udp_port = instance
    screen = pyte.Screen(COLS, LINES)
    stream = pyte.ByteStream(screen)
    child = pexpect.spawn(str(BIN / "portunus-standalone"), ["stats", "--metrics-addr", addr],
                          dimensions=(LINES, COLS), env={"TERM": "xterm", "PATH": "/usr/bin:/bin"})
    traffic = _Traffic(tcp_port, udp_port)
    try:
        lines = _screen_until(child, screen, stream, lambda ls: _moving(_row(ls, "web")) and
                              (_row(ls, "dns") or [""] * 9)[8] == "1", 30, "web moving and one dns flow")
        header = next(line for line in lines if line.startswith("RULE"))
        assert re.search(r"IN/s\s+OUT/s\s+CONNS\s+FLOWS\s+TOTAL\s+ERRORS", header), header
        web, dns = _row(lines, "web"), _row(lines, "dns")
        assert web is not None and dns is not None
        assert web[1:3] == ["tcp", f"127.0.0.1:{tcp_port}"] and web[7] == "1" and web[8] == "-", web  # 1 conn
        assert dns[1:3] == ["udp", f"127.0.0.1:{udp_port}"] and dns[7:9] == ["-", "1"], dns
        assert dns[-1] == "0" and web[-1] == "0", lines  # no errors
        # The view keeps refreshing: the clock in the title line changes.
        title = lines[0]
        _screen_until(child, screen, stream, lambda ls: ls[0] != title, 10, "the next refresh")
    finally:
        traffic.stop()
        if child.isalive():
            child.send("q")
    child.expect(pexpect.EOF, timeout=10)
    child.close()
    assert child.exitstatus == 0, child.before


def test_ctrl_c_quits_cleanly(instance: tuple[str, int, int]) -> None:
    addr, _, _ = instance
    screen = pyte.Screen(COLS, LINES)
    stream = pyte.ByteStream(screen)
    child = pexpect.spawn(str(BIN / "portunus-standalone"), ["stats", "--metrics-addr", addr],
                          dimensions=(LINES, COLS), env={"TERM": "xterm", "PATH": "/usr/bin:/bin"})
    _screen_until(child, screen, stream, lambda ls: _row(ls, "web") is not None, 30, "the web row")
    child.sendintr()
    child.expect(pexpect.EOF, timeout=10)
    child.close()
    assert child.exitstatus == 0 and child.signalstatus is None


def test_unreachable_instance_is_exit_1_with_a_reason() -> None:
    port = free_port()
    child = pexpect.spawn(str(BIN / "portunus-standalone"), ["stats", "--metrics-addr", f"127.0.0.1:{port}"],
                          dimensions=(LINES, COLS), env={"TERM": "xterm", "PATH": "/usr/bin:/bin"})
    child.expect("cannot read stats from 127.0.0.1:", timeout=20)
    child.expect(pexpect.EOF, timeout=10)
    child.close()
    assert child.exitstatus == 1
