"""Progress of a long run: a live line on a terminal, plain lines otherwise (CI logs)."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from harness.define.plan import Measurement
from harness.records.results import Record

# Per-measurement overhead beyond iperf3's own seconds (path start/stop,
# server start, report exchange), used for the ETA until real timings exist.
OVERHEAD_GUESS_S = 3.0


def format_duration(seconds: float) -> str:
    """'1h02m', '3m05s', '42s'."""
    s = int(round(max(seconds, 0)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def describe(m: Measurement) -> str:
    parts = [m.path, f"round {m.round}"]
    if m.http_mode is not None:
        parts.append(f"{m.http_mode}, {m.response_bytes} B responses")
    if m.offered_pps is not None:
        parts.append(f"{m.datagram_bytes} B x {m.offered_pps:,.0f}/s offered")
    elif m.offered_mbps is not None:
        parts.append(f"offered {m.offered_mbps:g} Mbit/s" + (f", {m.datagram_bytes} B" if m.datagram_bytes else ""))
    if m.cap_bytes_per_s is not None:
        parts.append(f"cap {m.cap_bytes_per_s} B/s")
    return ", ".join(parts)


def result_text(r: Record) -> str:
    """What one finished measurement gave, in the unit of its driver."""
    if not r.ok:
        return f"FAILED: {r.error}"
    if r.driver == "latency":
        return (f"setup p50 {r.setup_p50_us or 0:,.0f} µs, RTT p50 {r.rtt_p50_us or 0:,.1f} µs "
                f"({r.setup_samples}/{r.rtt_samples} samples)")
    if r.driver == "connrate":
        return f"{r.conn_per_s or 0:,.0f} connections/s, {r.conn_errors} errors"
    if r.driver == "wrk":
        return f"{r.requests_per_s or 0:,.0f} requests/s, {sum((r.http_errors or {}).values())} errors"
    if r.lost_pct is not None and r.delivered_pps is not None:
        return f"{r.delivered_pps:,.0f} datagrams/s delivered, {r.lost_pct:.2f}% lost"
    if r.lost_pct is not None:
        return f"{r.receiver_mbps or 0:,.1f} Mbit/s delivered, {r.lost_pct:.2f}% lost"
    return f"{r.throughput_mbps or 0:,.1f} Mbit/s"


class Progress:
    def __init__(self, total: int, per_run_s: float, stream: TextIO | None = None, live: bool | None = None):
        self.total = total
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.guess_s = per_run_s + OVERHEAD_GUESS_S
        self.done = 0
        self.t0 = time.monotonic()
        self._lock = threading.Lock()
        self._current: Measurement | None = None
        self._m_t0 = 0.0
        self._ticker: threading.Thread | None = None
        self._stop = threading.Event()

    def _eta(self) -> float:
        elapsed = time.monotonic() - self.t0
        per = elapsed / self.done if self.done else self.guess_s
        return per * (self.total - self.done)

    def _prefix(self) -> str:
        return f"[{self.done + 1}/{self.total}]"

    def _line(self, m: Measurement) -> str:
        now = time.monotonic()
        elapsed = format_duration(now - self.t0)
        # The time into this measurement only means something on a redrawn (live) line.
        this = f" ({format_duration(now - self._m_t0)})" if self.live else ""
        return f"{self._prefix()} {describe(m)}{this} | elapsed {elapsed}, ETA {format_duration(self._eta())}"

    def _write(self, text: str) -> None:
        with self._lock:
            self.stream.write(text)
            self.stream.flush()

    def _tick(self) -> None:
        # Terminal only: redraw the live line every second so a 35-s run visibly moves.
        while not self._stop.wait(1.0):
            m = self._current
            if m is not None:
                self._write("\r\x1b[2K" + self._line(m))

    def start(self, m: Measurement) -> None:
        self._current = m
        self._m_t0 = time.monotonic()
        if self.live:
            self._write("\r\x1b[2K" + self._line(m))
            if self._ticker is None:
                self._ticker = threading.Thread(target=self._tick, name="progress", daemon=True)
                self._ticker.start()
        else:
            self._write(self._line(m) + "\n")

    def finish(self, m: Measurement, r: Record) -> None:
        self._current = None
        result = result_text(r)
        line = f"[{self.done + 1}/{self.total}] {describe(m)} -> {result}"
        self.done += 1
        self._write(("\r\x1b[2K" if self.live else "") + line + "\n")

    def close(self) -> None:
        """Stop the terminal ticker."""
        self._current = None
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2)

    def message(self, text: str) -> None:
        self._write(("\r\x1b[2K" if self.live else "") + text + "\n")
