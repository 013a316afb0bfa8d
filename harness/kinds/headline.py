"""Headline: every path uncapped, N interleaved rounds; median [min-max] and ratios of medians."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from harness.records.results import Record
from harness.summarise.stats import Summary, ranges_overlap, ratio_pct, summarise

# Columns the ratios are taken against: the kernel (the spec's 100% line),
# no forwarder at all, and the C splice reference (what userspace can reach).
BASELINES = ("iptables", "direct", "reference")


@dataclass(frozen=True)
class PathResult:
    path: str
    throughput_mbps: Summary  # sender side, non-omitted interval
    receiver_mbps: Summary
    cpu_s_per_gb: Summary  # forwarder CPU; n == 0 for kernel paths
    retransmits: Summary
    n_failed: int
    vs_pct: dict[str, float | None] = field(default_factory=dict)  # baseline -> median / median * 100


@dataclass(frozen=True)
class HeadlineSummary:
    paths: tuple[PathResult, ...]
    notes: tuple[str, ...]

    def get(self, path: str) -> PathResult | None:
        return next((p for p in self.paths if p.path == path), None)


def summarise_headline(records: Iterable[Record], path_order: Sequence[str] = ()) -> HeadlineSummary:
    """Uncapped, unpaced records grouped by path, in path_order (then first-seen order)."""
    rows = [r for r in records if r.cap_bytes_per_s is None and r.offered_mbps is None]
    order = list(path_order) + [r.path for r in rows if r.path not in path_order]
    order = list(dict.fromkeys(p for p in order if any(r.path == p for r in rows)))
    results = []
    for path in order:
        mine = [r for r in rows if r.path == path]
        ok = [r for r in mine if r.ok]
        results.append(PathResult(
            path=path,
            throughput_mbps=summarise(r.throughput_mbps for r in ok),
            receiver_mbps=summarise(r.receiver_mbps for r in ok),
            cpu_s_per_gb=summarise(r.cpu_s_per_gb for r in ok),
            retransmits=summarise(r.retransmits for r in ok),
            n_failed=len(mine) - len(ok),
        ))
    medians = {p.path: p.throughput_mbps.median for p in results}
    results = [
        PathResult(p.path, p.throughput_mbps, p.receiver_mbps, p.cpu_s_per_gb, p.retransmits, p.n_failed,
                   {b: ratio_pct(medians.get(p.path), medians.get(b)) for b in BASELINES if b in medians})
        for p in results
    ]
    return HeadlineSummary(tuple(results), tuple(_notes(results)))


def _notes(results: list[PathResult]) -> list[str]:
    notes = []
    by = {p.path: p for p in results}
    for p in results:
        t = p.throughput_mbps
        if t.wide:
            notes.append(f"{p.path}: spread (max-min) is {t.spread_pct:.0f}% of the median over n={t.n}: "
                         "too noisy to rank; rerun with more rounds or on a quieter host")
        if p.n_failed:
            notes.append(f"{p.path}: {p.n_failed} failed measurement(s) left out (see the result file)")
    base = by.get("iptables")
    if base is not None:
        for p in results:
            if p.path != "iptables" and ranges_overlap(p.throughput_mbps, base.throughput_mbps):
                notes.append(f"{p.path} and iptables overlap ([min-max] ranges): no ranking between them at "
                             f"n={min(p.throughput_mbps.n, base.throughput_mbps.n)}")
    return notes
