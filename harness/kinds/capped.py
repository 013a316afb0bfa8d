"""Cap accuracy: delivered Mbit/s vs the cap (bytes/s * 8 / 1e6), against two bounds.

Delivered = iperf3's receiver-side rate over the non-omitted interval: the
bytes that actually crossed the capped forwarder. The sender-side figure
can run ahead by whatever the socket buffers absorbed.
  bound: the spec's acceptance rule, delivered <= cap * (1 + bound_pct/100)
  goal:  the tighter target, |delivered - cap| <= goal_pct of the cap
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from harness.records.results import Record
from harness.summarise.stats import Summary, pct_error, summarise


def target_mbps(cap_bytes_per_s: int) -> float:
    """The cap in Mbit/s (decimal, as iperf3 reports)."""
    return cap_bytes_per_s * 8 / 1e6


def within_bound(delivered_mbps: float | None, cap_bytes_per_s: int, bound_pct: float) -> bool:
    """The spec's rule: something was delivered, and no more than cap + bound_pct."""
    if delivered_mbps is None:
        return False
    return 0 < delivered_mbps <= target_mbps(cap_bytes_per_s) * (1 + bound_pct / 100)


def within_goal(delivered_mbps: float | None, cap_bytes_per_s: int, goal_pct: float) -> bool:
    err = pct_error(delivered_mbps, target_mbps(cap_bytes_per_s))
    return err is not None and abs(err) <= goal_pct


@dataclass(frozen=True)
class CapRow:
    path: str
    cap_bytes_per_s: int
    target_mbps: float
    delivered_mbps: Summary  # receiver side
    sender_mbps: Summary
    error_pct: float | None  # of the median delivered vs target
    within_bound: bool  # median delivered
    within_goal: bool  # median delivered
    n_within_bound: int  # individual runs
    n_within_goal: int
    n_failed: int


@dataclass(frozen=True)
class CappedSummary:
    rows: tuple[CapRow, ...]
    bound_pct: float
    goal_pct: float


def summarise_capped(records: Iterable[Record], bound_pct: float = 10.0, goal_pct: float = 2.0) -> CappedSummary:
    """One row per (path, cap) over the capped records."""
    capped = [r for r in records if r.cap_bytes_per_s is not None]
    keys = list(dict.fromkeys((r.path, r.cap_bytes_per_s) for r in capped))
    rows = []
    for path, cap in sorted(keys, key=lambda k: (k[0], k[1])):
        assert cap is not None
        mine = [r for r in capped if r.path == path and r.cap_bytes_per_s == cap]
        ok = [r for r in mine if r.ok]
        delivered = summarise(r.receiver_mbps for r in ok)
        rows.append(CapRow(
            path=path, cap_bytes_per_s=cap, target_mbps=target_mbps(cap), delivered_mbps=delivered,
            sender_mbps=summarise(r.sender_mbps for r in ok),
            error_pct=pct_error(delivered.median, target_mbps(cap)),
            within_bound=within_bound(delivered.median, cap, bound_pct),
            within_goal=within_goal(delivered.median, cap, goal_pct),
            n_within_bound=sum(within_bound(r.receiver_mbps, cap, bound_pct) for r in ok),
            n_within_goal=sum(within_goal(r.receiver_mbps, cap, goal_pct) for r in ok),
            n_failed=len(mine) - len(ok),
        ))
    return CappedSummary(tuple(rows), bound_pct, goal_pct)
