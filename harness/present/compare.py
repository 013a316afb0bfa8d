"""The spec's perf_compare JSON (pure): the headline keys from compare's records, or one entry per sweep record.

The headline JSON keys are exactly the spec's (its "Reproduction" example):
direct, iptables_redirect, iptables_vs_direct_pct, standalone_uncapped,
standalone_vs_direct_pct, standalone_vs_iptables_pct, client_uncapped,
client_vs_direct_pct, client_vs_iptables_pct, standalone_vs_client_pct,
client_capped {cap_bytes_per_sec, mbps, target_mbps, within_plus_10pct}.
A path that was not measured (skipped, or iptables without --with-iptables)
has null in its keys. With several --rounds, "mbps" is the median.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from harness.kinds.capped import CappedSummary, target_mbps, within_bound
from harness.kinds.headline import HeadlineSummary
from harness.records.results import Record
from harness.summarise.stats import ratio_pct

# Our path name -> the spec's JSON key for its uncapped result.
SPEC_PATH_KEYS = {
    "direct": "direct",
    "iptables": "iptables_redirect",
    "standalone": "standalone_uncapped",
    "client": "client_uncapped",
}
# (key, numerator path, denominator path), in the spec's order.
SPEC_RATIO_KEYS = (
    ("iptables_vs_direct_pct", "iptables", "direct"),
    ("standalone_vs_direct_pct", "standalone", "direct"),
    ("standalone_vs_iptables_pct", "standalone", "iptables"),
    ("client_vs_direct_pct", "client", "direct"),
    ("client_vs_iptables_pct", "client", "iptables"),
    ("standalone_vs_client_pct", "standalone", "client"),
)
SPEC_BOUND_PCT = 10.0  # "inside the +10% acceptance bound": the key within_plus_10pct
SPEC_CAPPED_PATH = "client_capped"  # the spec's capped key measures a client rule




def _round(v: float | None, digits: int) -> float | None:
    return None if v is None else round(v, digits)


def build_compare_json(headline: HeadlineSummary, capped: CappedSummary, cap_bytes_per_s: int) -> dict[str, Any]:
    """The spec's headline JSON from the compare run's summaries: its headline and its cap accuracy (pure)."""
    medians: dict[str, float | None] = {}
    out: dict[str, Any] = {}
    for path, key in SPEC_PATH_KEYS.items():
        p = headline.get(path)
        mbps = p.throughput_mbps.median if p is not None else None
        medians[path] = mbps
        retr = p.retransmits.median if p is not None else None
        out[key] = None if mbps is None else {"mbps": _round(mbps, 3),
                                             "retransmits": None if retr is None else int(round(retr))}
    ratios = {k: _round(ratio_pct(medians[a], medians[b]), 2) for k, a, b in SPEC_RATIO_KEYS}
    ordered: dict[str, Any] = {}
    # Interleave exactly as the spec's example lists them.
    for key in ("direct", "iptables_redirect", "iptables_vs_direct_pct", "standalone_uncapped",
                "standalone_vs_direct_pct", "standalone_vs_iptables_pct", "client_uncapped",
                "client_vs_direct_pct", "client_vs_iptables_pct", "standalone_vs_client_pct"):
        ordered[key] = out[key] if key in out else ratios[key]
    row = capped.get(SPEC_CAPPED_PATH, cap_bytes_per_s)
    delivered = row.delivered_mbps.median if row is not None else None
    ordered["client_capped"] = None if cap_bytes_per_s <= 0 or delivered is None else {
        "cap_bytes_per_sec": cap_bytes_per_s,
        "mbps": _round(delivered, 3),
        "target_mbps": _round(target_mbps(cap_bytes_per_s), 3),
        "within_plus_10pct": within_bound(delivered, cap_bytes_per_s, SPEC_BOUND_PCT),
    }
    return ordered


def build_sweep_json(records: Iterable[Record]) -> dict[str, Any]:
    """Sweep mode: one entry per path, offered rate and round (pure)."""
    recs = [r for r in records if r.offered_mbps is not None]
    return {
        "offered_mbps": sorted({r.offered_mbps for r in recs if r.offered_mbps is not None}),
        "records": [
            {
                "path": r.path,
                "offered_mbps": r.offered_mbps,
                "round": r.round,
                "status": r.status,
                "mbps": _round(r.throughput_mbps, 3),
                "receiver_mbps": _round(r.receiver_mbps, 3),
                "retransmits": r.retransmits,
                "error": r.error,
            }
            for r in sorted(recs, key=lambda r: (r.path, r.offered_mbps or 0.0, r.round))
        ],
    }
