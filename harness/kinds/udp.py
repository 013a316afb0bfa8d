"""UDP: `iperf3 -u` at fixed offered rates per path: delivered rate, loss, jitter.

Delivered = iperf3's receiver-side rate over the non-omitted interval (the
datagrams that made it through); loss and jitter are iperf3's receiver-side
figures. At each rate the `direct` path shows what the host itself loses.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from harness.records.results import Record
from harness.summarise.stats import Summary, ratio_pct, summarise


@dataclass(frozen=True)
class UdpRow:
    path: str
    offered_mbps: float
    delivered_mbps: Summary  # receiver side
    pct_of_offered: float | None  # median delivered / offered * 100
    loss_pct: Summary
    jitter_ms: Summary
    cpu_s_per_gb: Summary
    n_failed: int


@dataclass(frozen=True)
class UdpSummary:
    rows: tuple[UdpRow, ...]
    paths: tuple[str, ...]
    rates_mbps: tuple[float, ...]
    notes: tuple[str, ...]

    def cell(self, path: str, rate: float) -> UdpRow | None:
        return next((r for r in self.rows if r.path == path and r.offered_mbps == rate), None)


def summarise_udp(records: Iterable[Record], path_order: Sequence[str] = ()) -> UdpSummary:
    """One row per (path, offered rate) over the UDP iperf3 records."""
    udp = [r for r in records if r.protocol == "udp" and r.offered_mbps is not None and r.driver == "iperf3"]
    paths = tuple(dict.fromkeys([p for p in path_order if any(r.path == p for r in udp)] + [r.path for r in udp]))
    rates = tuple(sorted({r.offered_mbps for r in udp if r.offered_mbps is not None}))
    rows, notes = [], []
    for path in paths:
        for rate in rates:
            mine = [r for r in udp if r.path == path and r.offered_mbps == rate]
            if not mine:
                continue
            ok = [r for r in mine if r.ok]
            delivered = summarise(r.receiver_mbps for r in ok)
            rows.append(UdpRow(path, rate, delivered, ratio_pct(delivered.median, rate),
                               summarise(r.lost_pct for r in ok), summarise(r.jitter_ms for r in ok),
                               summarise(r.cpu_s_per_gb for r in ok), len(mine) - len(ok)))
            if len(mine) != len(ok):
                notes.append(f"{path} at {rate:g} Mbit/s: {len(mine) - len(ok)} failed measurement(s) left out")
    return UdpSummary(tuple(rows), paths, rates, tuple(notes))
