"""Per-rule counters, kept off the hot path.

Pumps write only their own `Counter` (no lock, one writer). A rule's totals
are the bytes of finished connections (folded in under a lock when a
connection ends) plus whatever its live connections have moved so far, read
at snapshot time. So a byte is counted once, and a scrape never blocks a pump.
Datagrams (UDP) are counted the same way: a flow that has `datagrams_moved()`
reports them next to its bytes; a TCP connection has none.
"""

from __future__ import annotations

import threading
import time
from collections import Counter as Tally
from collections import deque
from typing import Any, Protocol

# "Current rate" = bytes moved over the last RATE_WINDOW_S, from samples the
# forwarder takes about once a second (RATE_SAMPLES of them cover the window).
RATE_WINDOW_S = 5.0
RATE_SAMPLES = int(RATE_WINDOW_S) + 1


class LiveFlow(Protocol):
    def bytes_moved(self) -> tuple[int, int]:
        """(bytes in, bytes out) so far."""


def _datagrams(flow: LiveFlow) -> tuple[int, int]:
    """(datagrams in, out) of a UDP flow so far; (0, 0) for a TCP connection."""
    moved = getattr(flow, "datagrams_moved", None)
    return moved() if moved is not None else (0, 0)


class RuleStats:
    """Counters of one rule (survive reloads that keep the rule's name)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.bytes_in_done = 0
        self.bytes_out_done = 0
        self.datagrams_in_done = 0
        self.datagrams_out_done = 0
        self.connections_total = 0
        self.connect_failures = 0
        self.failovers = 0
        self.splice_connections = 0
        self.copy_connections = 0
        self.quota_cuts = 0  # connections (or UDP flows) reset because their owner's quota was spent
        self.rejected: Tally[str] = Tally()
        self.dropped: Tally[str] = Tally()
        self.sni_routes: Tally[str] = Tally()  # SNI listeners: connections routed here, by result
        self.live: set[LiveFlow] = set()
        self._samples: deque[tuple[float, int, int]] = deque(maxlen=RATE_SAMPLES)

    def opened(self, flow: LiveFlow, spliced: bool) -> None:
        with self.lock:
            self.live.add(flow)
            self.connections_total += 1
            if spliced:
                self.splice_connections += 1
            else:
                self.copy_connections += 1

    def closed(self, flow: LiveFlow) -> None:
        bytes_in, bytes_out = flow.bytes_moved()
        dgrams_in, dgrams_out = _datagrams(flow)
        with self.lock:
            self.live.discard(flow)
            self.bytes_in_done += bytes_in
            self.bytes_out_done += bytes_out
            self.datagrams_in_done += dgrams_in
            self.datagrams_out_done += dgrams_out

    def closed_tcp(self, flow: LiveFlow, bytes_in: int, bytes_out: int) -> None:
        """closed() for a TCP connection (no datagrams; the hot path of short connections)."""
        with self.lock:
            self.live.discard(flow)
            self.bytes_in_done += bytes_in
            self.bytes_out_done += bytes_out

    def count(self, field: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, field, getattr(self, field) + n)

    def reject(self, reason: str) -> None:
        with self.lock:
            self.rejected[reason] += 1

    def drop(self, reason: str, n: int = 1) -> None:
        with self.lock:
            self.dropped[reason] += n

    def routed(self, result: str) -> None:
        with self.lock:
            self.sni_routes[result] += 1

    def totals(self) -> tuple[int, int]:
        """(bytes in, bytes out) of finished and live connections."""
        with self.lock:
            bytes_in, bytes_out = self.bytes_in_done, self.bytes_out_done
            live = list(self.live)
        for flow in live:
            bi, bo = flow.bytes_moved()
            bytes_in += bi
            bytes_out += bo
        return bytes_in, bytes_out

    def sample(self, now: float | None = None) -> None:
        """Record the byte totals now, for `rates` (called about once a second)."""
        now = time.monotonic() if now is None else now
        bytes_in, bytes_out = self.totals()
        with self.lock:
            self._samples.append((now, bytes_in, bytes_out))

    def rates(self) -> tuple[float, float]:
        """Bytes/s in and out over the sampled window (0 until two samples exist)."""
        with self.lock:
            if len(self._samples) < 2:
                return 0.0, 0.0
            t0, i0, o0 = self._samples[0]
            t1, i1, o1 = self._samples[-1]
        dt = t1 - t0
        return ((i1 - i0) / dt, (o1 - o0) / dt) if dt > 0 else (0.0, 0.0)

    def snapshot(self) -> dict[str, Any]:
        rate_in, rate_out = self.rates()
        with self.lock:
            live = list(self.live)
            out: dict[str, Any] = {
                "bytes_in": self.bytes_in_done,
                "bytes_out": self.bytes_out_done,
                "datagrams_in": self.datagrams_in_done,
                "datagrams_out": self.datagrams_out_done,
                "connections_active": len(live),
                "connections_total": self.connections_total,
                "connect_failures": self.connect_failures,
                "failovers": self.failovers,
                "splice_connections": self.splice_connections,
                "copy_connections": self.copy_connections,
                "quota_cuts": self.quota_cuts,
                "rejected": dict(self.rejected),
                "dropped": dict(self.dropped),
                "sni_routes": dict(self.sni_routes),
                "rate_in_bytes_per_s": round(rate_in, 1),
                "rate_out_bytes_per_s": round(rate_out, 1),
            }
        for flow in live:
            bi, bo = flow.bytes_moved()
            out["bytes_in"] += bi
            out["bytes_out"] += bo
            di, do = _datagrams(flow)
            out["datagrams_in"] += di
            out["datagrams_out"] += do
        return out


# Snapshot fields that are not counters: taken from the first worker that has them.
_DESCRIPTIVE = ("protocol", "listen", "targets", "current_limits", "sni_pattern")
# Snapshot fields computed from the counters: recomputed after summing.
_DERIVED = ("target_health",)


def describe_health(entry: dict[str, Any]) -> None:
    """Add `target_health` {target: "up" | "down" | "partial"} from the summed
    health_up / health_checked counts (partial: some workers see it down)."""
    up, checked = entry.get("health_up") or {}, entry.get("health_checked")
    if not checked:
        return
    entry["target_health"] = {
        target: "up" if up.get(target, 0) >= n else "down" if not up.get(target, 0) else "partial"
        for target, n in checked.items()}


def merge_snapshots(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """One snapshot from several workers' (`Forwarder.snapshot`): counters and rates summed."""
    rules: dict[str, dict[str, Any]] = {}
    for snap in snapshots:
        for name, entry in snap.get("rules", {}).items():
            into = rules.setdefault(name, {})
            for key, value in entry.items():
                if key in _DERIVED:
                    continue
                if key in _DESCRIPTIVE:
                    into.setdefault(key, value)
                elif isinstance(value, dict):
                    _add(into.setdefault(key, {}), value)
                elif isinstance(value, (int, float)) and not isinstance(value, bool):
                    into[key] = into.get(key, 0) + value
                else:
                    into.setdefault(key, value)
    for entry in rules.values():
        for key in ("rate_in_bytes_per_s", "rate_out_bytes_per_s"):
            if key in entry:
                entry[key] = round(entry[key], 1)
        describe_health(entry)
    listeners: dict[str, dict[str, int]] = {}
    for snap in snapshots:
        for label, counts in snap.get("sni_listeners", {}).items():
            _add(listeners.setdefault(label, {}), counts)
    return {"rules": rules, "sni_listeners": listeners}


def _add(into: dict[str, Any], counts: dict[str, Any]) -> None:
    for k, v in counts.items():
        into[k] = into.get(k, 0) + v
