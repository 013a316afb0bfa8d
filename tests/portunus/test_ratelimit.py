"""Bandwidth caps, owner sharing, fairness, connection limits and live reload,
through a real `portunus-standalone` process, measured at the RECEIVER.

How rates are measured (robust on a shared 2-core host): every receiver
records (time, cumulative bytes) after each recv, with a buffer large enough
to take any backlog in one call. A capped stream arrives as a staircase (one
step per throttled chunk); the rate over a window is the bytes of the steps
that START inside it divided by the time between the first and last step
start. A stall of the forwarder at a window edge produces no samples, so it
does not bias the result; a late receiver counts its backlog at its own
(late) timestamp, which is also consistent.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.support.net import echo_handler, free_ports, tcp_server
from tests.support.wait import wait_for

KIB = 1024
MIB = 1024 * 1024
# Transfers send in 64 KiB writes; receivers read up to 4 MiB at once so a
# late reader takes its whole backlog in one sample.
SEND_CHUNK_BYTES = 64 * KIB
RECV_BUFFER_BYTES = 4 * MIB
FAST = b"\xa5" * SEND_CHUNK_BYTES

pytestmark = pytest.mark.slow


class Recorder:
    """Cumulative bytes received over time, from one receiving socket."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.totals: list[int] = []
        self.total = 0

    def run(self, sock: socket.socket) -> None:
        buf = bytearray(RECV_BUFFER_BYTES)
        try:
            while True:
                n = sock.recv_into(buf)
                if n == 0:
                    return
                self.total += n
                self.times.append(time.monotonic())
                self.totals.append(self.total)
        except OSError:
            return

    @property
    def first(self) -> float:
        assert self.times, "nothing received"
        return self.times[0]

    def rate(self, start: float, end: float) -> float:
        """Bytes/s of the steps starting in [start, end] (see the module docstring)."""
        idx = [k for k, t in enumerate(self.times) if start <= t <= end]
        assert len(idx) >= 3, f"only {len(idx)} receive events in [{start:.2f}, {end:.2f}]"
        i, j = idx[0], idx[-1]
        before_i = self.totals[i - 1] if i else 0
        bytes_between = self.totals[j - 1] - before_i
        return bytes_between / (self.times[j] - self.times[i])

    def bytes_until(self, t: float) -> int:
        """Bytes received at or before time t."""
        total = 0
        for tt, cum in zip(self.times, self.totals, strict=True):
            if tt > t:
                break
            total = cum
        return total


def _send_until(sock: socket.socket, stop: threading.Event) -> None:
    try:
        while not stop.is_set():
            sock.sendall(FAST)
    except OSError:
        pass


class DuplexServer:
    """Target server: per connection, sinks what arrives (recorded) and sends as fast as it can."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.recorders: list[Recorder] = []
        self._threads: list[threading.Thread] = []
        self.server = None

    def handler(self, conn: socket.socket) -> None:
        rec = Recorder()
        self.recorders.append(rec)
        sender = threading.Thread(target=_send_until, args=(conn, self.stop), daemon=True)
        sender.start()
        rec.run(conn)
        self.stop.wait()
        sender.join(timeout=5)


class Transfer:
    """Client side: one connection through the forwarder, sending and receiving at full speed."""

    def __init__(self, port: int, send: bool = True) -> None:
        # Before connecting, so before any byte of this transfer took a token:
        # a lower bound for when its buckets were first used, whatever the
        # scheduler does to the receiving threads afterwards.
        self.started = time.monotonic()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.sock.settimeout(None)
        self.received = Recorder()
        self.stop = threading.Event()
        self._threads = [threading.Thread(target=self.received.run, args=(self.sock,), daemon=True)]
        if send:
            self._threads.append(threading.Thread(target=_send_until, args=(self.sock, self.stop), daemon=True))
        for t in self._threads:
            t.start()

    def close(self) -> None:
        self.stop.set()
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        for t in self._threads:
            t.join(timeout=5)
        self.sock.close()


@contextmanager
def duplex_target() -> Iterator[tuple[DuplexServer, int]]:
    ds = DuplexServer()
    with tcp_server(ds.handler) as srv:
        try:
            yield ds, srv.port
        finally:
            ds.stop.set()


def get_json(metrics: str, path: str = "/stats") -> dict:
    with urllib.request.urlopen(f"http://{metrics}{path}", timeout=5) as r:
        return json.load(r)


def get_text(metrics: str, path: str = "/metrics") -> str:
    with urllib.request.urlopen(f"http://{metrics}{path}", timeout=5) as r:
        return r.read().decode()


def metric(text: str, series: str) -> float:
    """Value of one Prometheus series (name and labels exactly as exposed)."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{series} not exposed")


def launch(standalone, toml: str, metrics: str | None = None):
    """Start portunus-standalone and wait for its "running" log line.

    Not wait_port: a probe connection would count against connection limits
    and show up in the per-rule counters these tests assert on.
    """
    proc = standalone(toml, metrics_addr=metrics)
    wait_for(lambda: "running" in proc.log() or proc.proc.poll() is not None, what="start")
    assert proc.proc.poll() is None, proc.log()
    return proc


def rule(name: str, port: int, target_port: int, limits: str = "", owner: str | None = None) -> str:
    out = (f'[[rule]]\nname = "{name}"\nlisten_addr = "127.0.0.1"\nlisten_port = {port}\n'
           f'target = "127.0.0.1:{target_port}"\n')
    if owner:
        out += f'owner = "{owner}"\n'
    if limits:
        out += f"rate_limit = {{ {limits} }}\n"
    return out + "\n"


HEAD = "[global]\nshutdown_drain_secs = 1\n\n"

# Caps from the issue: 64 KiB/s, 1 MiB/s and 10 MiB/s (in BYTES per second).
CAPS = {"cap-64k": 64 * KIB, "cap-1m": 1 * MIB, "cap-10m": 10 * MIB}
# Window for the accuracy check: skip the first 0.5 s (thread start-up on a
# busy host), then >= 5 s as the issue asks.
SKIP_S = 0.5
WINDOW_S = 5.5


def test_caps_are_accurate_at_the_receiver_in_both_directions(standalone):
    """64 KiB/s, 1 MiB/s, 10 MiB/s caps, each direction, all at once, within +-2% over 5.5 s."""
    ports = free_ports(len(CAPS) + 1)
    metrics = f"127.0.0.1:{ports[-1]}"
    with duplex_target() as (target, tport):
        toml = HEAD + "".join(
            rule(name, p, tport, f"bandwidth_in_bps = {cap}, bandwidth_out_bps = {cap}")
            for (name, cap), p in zip(CAPS.items(), ports, strict=False))
        proc = launch(standalone, toml, metrics)
        transfers = {}
        for (name, _cap), p in zip(CAPS.items(), ports, strict=False):
            transfers[name] = Transfer(p)
            # Match the target-side recorder to this rule's connection (accept order).
            n_open = len(transfers)
            wait_for(lambda n=n_open: len(target.recorders) >= n, what="target connection")
        received_in = dict(zip(CAPS, target.recorders, strict=True))
        time.sleep(SKIP_S + WINDOW_S + 0.3)
        metrics_text = get_text(metrics)
        snapshot = get_json(metrics)
        for t in transfers.values():
            t.close()
    assert proc.proc.poll() is None, proc.log()

    failures = []
    for name, cap in CAPS.items():
        for direction, rec in (("in", received_in[name]), ("out", transfers[name].received)):
            start = rec.first + SKIP_S
            rate = rec.rate(start, start + WINDOW_S)
            err = rate / cap - 1
            if abs(err) > 0.02:
                failures.append(f"{name} {direction}: {rate:.0f} B/s vs cap {cap} ({err:+.2%})")
            # The transfer began within a second of the rule starting, so its
            # bucket started empty: no burst on top of the cap, from the first byte
            # (a 1-s burst would exceed this bound by a whole second of rate).
            chunk = cap // 50
            t0 = transfers[name].started
            for t, total in zip(rec.times, rec.totals, strict=True):
                allowed = cap * (t - t0) + 2 * chunk + cap * 0.05
                if total > allowed:
                    failures.append(f"{name} {direction}: {total} B by +{t - t0:.2f} s (> {allowed:.0f})")
                    break
    assert not failures, "\n".join(failures)

    # Current rate per rule (5-s window of once-a-second samples) and the limits in force.
    for name, cap in CAPS.items():
        entry = snapshot["rules"][name]
        for direction in ("in", "out"):
            assert entry[f"rate_{direction}_bytes_per_s"] == pytest.approx(cap, rel=0.15), (name, entry)
        assert entry["current_limits"]["bandwidth_out_bps"] == cap
        assert entry["copy_connections"] == 1 and entry["splice_connections"] == 0
    assert metric(metrics_text, 'portunus_rule_limit{limit="bandwidth_in_bps",rule="cap-1m"}') == MIB
    rate_10m = metric(metrics_text, 'portunus_rule_rate_bytes_per_second{direction="out",rule="cap-10m"}')
    assert rate_10m == pytest.approx(10 * MIB, rel=0.15)


def test_owner_cap_is_shared_by_its_rules_and_fair_between_connections(standalone):
    """Owner cap 1 MiB/s over two rules; a 512 KiB/s rule cap over two connections; 10 s."""
    owner_cap, rule_cap = 1 * MIB, 512 * KIB
    ports = free_ports(4)
    metrics = f"127.0.0.1:{ports[-1]}"
    window_s = 10.0
    with duplex_target() as (_target, tport):
        toml = (HEAD + '[[owner]]\nname = "acme"\n'
                f"rate_limit = {{ bandwidth_out_bps = {owner_cap} }}\n\n"
                + rule("acme-a", ports[0], tport, owner="acme")
                + rule("acme-b", ports[1], tport, owner="acme")
                + rule("solo", ports[2], tport, f"bandwidth_out_bps = {rule_cap}"))
        proc = launch(standalone, toml, metrics)
        # Download only: the targets send as fast as they can.
        streams = [Transfer(ports[0], send=False), Transfer(ports[1], send=False),
                   Transfer(ports[2], send=False), Transfer(ports[2], send=False)]
        wait_for(lambda: all(s.received.times for s in streams), what="first bytes")
        start = max(s.received.first for s in streams) + SKIP_S
        time.sleep(max(0.0, start + window_s + 0.3 - time.monotonic()))
        snapshot = get_json(metrics)
        for s in streams:
            s.close()
    assert proc.proc.poll() is None, proc.log()

    rates = [s.received.rate(start, start + window_s) for s in streams]
    owner_total, solo_total = rates[0] + rates[1], rates[2] + rates[3]
    assert owner_total == pytest.approx(owner_cap, rel=0.02), rates
    assert solo_total == pytest.approx(rule_cap, rel=0.02), rates
    for a, b in ((rates[0], rates[1]), (rates[2], rates[3])):
        assert min(a, b) / max(a, b) >= 0.8, f"unfair split: {rates}"
    # The owner's rules stay on the copy path; the uncapped rule direction
    # (in) has no cap but the connection is capped, so it is copied too.
    assert snapshot["rules"]["acme-a"]["copy_connections"] == 1


def test_burst_after_idle_is_the_configured_burst_and_no_more(standalone):
    cap, burst = 64 * KIB, 32 * KIB
    ports = free_ports(2)
    with duplex_target() as (target, tport):
        proc = launch(standalone, HEAD + rule("b", ports[0], tport,
                                             f"bandwidth_in_bps = {cap}, bandwidth_in_burst = {burst}"))
        first = Transfer(ports[0])
        wait_for(lambda: target.recorders and target.recorders[0].times, what="first bytes")
        time.sleep(1.0)
        first.close()
        time.sleep(2.0)  # idle: the bucket refills to `burst` (not to 2 s of rate)
        second = Transfer(ports[0])
        wait_for(lambda: len(target.recorders) > 1 and target.recorders[1].times, what="second transfer")
        rec = target.recorders[1]
        time.sleep(2.0)
        second.close()
    assert proc.proc.poll() is None, proc.log()
    t0 = second.started  # before connect: no token of this transfer was taken earlier
    chunk = min(cap // 50, burst)
    # The burst is delivered at once...
    assert rec.bytes_until(rec.first + 0.2) >= burst
    # ...and never more than burst + rate x elapsed (+ one chunk, + 50 ms of scheduling slack).
    for t, total in zip(rec.times, rec.totals, strict=True):
        assert total <= burst + cap * (t - t0 + 0.05) + chunk, (t - t0, total)


def test_reload_changes_a_live_cap_within_a_second(standalone):
    ports = free_ports(1)
    with duplex_target() as (_target, tport):
        def config(cap: int) -> str:
            return HEAD + rule("live", ports[0], tport, f"bandwidth_out_bps = {cap}")

        proc = launch(standalone, config(1 * MIB))
        stream = Transfer(ports[0], send=False)
        wait_for(lambda: stream.received.times, what="first bytes")
        time.sleep(1.5)
        before = stream.received.rate(stream.received.first + 0.3, time.monotonic())

        proc.reload(config(128 * KIB))
        proc.wait_log("reloaded")
        lowered_at = time.monotonic()
        time.sleep(3.2)
        lowered = stream.received.rate(lowered_at + 1.0, lowered_at + 3.0)

        proc.reload(config(512 * KIB))
        wait_for(lambda: proc.log().count("reloaded") >= 2, what="second reload")
        raised_at = time.monotonic()
        time.sleep(3.2)
        raised = stream.received.rate(raised_at + 1.0, raised_at + 3.0)
        stream.close()
    assert proc.proc.poll() is None, proc.log()
    assert before == pytest.approx(1 * MIB, rel=0.05)
    assert lowered == pytest.approx(128 * KIB, rel=0.03)
    assert raised == pytest.approx(512 * KIB, rel=0.03)


def _probe(port: int, hold: list[socket.socket] | None = None) -> bool:
    """Open a connection through the forwarder to an echo target; True if it carries data."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
    except ConnectionResetError:  # refused so fast that the RST beat connect()'s return
        return False
    try:
        s.sendall(b"x")
        ok = s.recv(1) == b"x"
    except OSError:
        ok = False
    if ok and hold is not None:
        hold.append(s)
    else:
        s.close()
    return ok


def test_connection_rate_refuses_exactly_the_excess(standalone):
    ports = free_ports(2)
    metrics = f"127.0.0.1:{ports[1]}"
    with tcp_server(echo_handler) as echo:
        # 0.1/s: no new token for 10 s, far longer than the 12 probes take.
        proc = launch(standalone, HEAD + rule("rate", ports[0], echo.port,
                                             "new_connections_per_sec = 0.1, new_connections_burst = 5"), metrics)
        outcomes = [_probe(ports[0]) for _ in range(12)]
        stats = get_json(metrics)["rules"]["rate"]
    assert proc.proc.poll() is None, proc.log()
    assert outcomes == [True] * 5 + [False] * 7
    assert stats["rejected"] == {"connection_rate": 7}
    assert stats["connections_total"] == 5
    assert stats["splice_connections"] == 5  # a connection limit does not disable splice


def test_concurrency_limit_refuses_exactly_the_excess_per_rule_and_per_owner(standalone):
    ports = free_ports(4)
    metrics = f"127.0.0.1:{ports[3]}"
    held: list[socket.socket] = []
    try:
        with tcp_server(echo_handler) as echo:
            toml = (HEAD + '[[owner]]\nname = "o"\nrate_limit = { concurrent_connections = 3 }\n\n'
                    + rule("conc", ports[0], echo.port, "concurrent_connections = 2")
                    + rule("o-a", ports[1], echo.port, owner="o")
                    + rule("o-b", ports[2], echo.port, owner="o"))
            proc = launch(standalone, toml, metrics)

            assert [_probe(ports[0], held) for _ in range(5)] == [True, True, False, False, False]
            # Owner: 3 live connections across both of its rules, whichever rule they use.
            assert [_probe(ports[1], held), _probe(ports[2], held), _probe(ports[1], held)] == [True] * 3
            assert [_probe(ports[2], held), _probe(ports[1], held)] == [False, False]

            # Closing one frees exactly one slot, once the forwarder has seen the close.
            held.pop(0).close()
            wait_for(lambda: get_json(metrics)["rules"]["conc"]["connections_active"] == 1, what="release")
            assert [_probe(ports[0], held), _probe(ports[0], held)] == [True, False]
            rules = get_json(metrics)["rules"]
    finally:
        for s in held:
            s.close()
    assert rules["conc"]["rejected"] == {"concurrency": 4}
    assert rules["o-a"]["rejected"] == {"concurrency": 1}
    assert rules["o-b"]["rejected"] == {"concurrency": 1}
    assert proc.proc.poll() is None, proc.log()


