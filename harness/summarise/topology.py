"""Across topologies: the same paths on loopback and on network namespaces (pure; no I/O).

A result file's header says where it ran (`topology`, results schema 3).
Numbers from different topologies are never mixed inside one table (the
report and the plots group files by `topology_label`); this module compares
them side by side when a directory holds runs of both: per path the
headline-style throughput (uncapped, unpaced) on each topology, the ratio of
medians netns / loopback, and each path's share of the kernel NAT baseline
(iptables) within its own topology, which is what moves when the crossing
changes what is expensive.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from harness.records.header import LOOPBACK_INFO, TopologyInfo
from harness.records.results import ResultSet
from harness.summarise.stats import Summary, ratio_pct, summarise

# The file kinds whose records are headline-style throughput runs (iperf3, uncapped, unpaced).
THROUGHPUT_KINDS = ("headline", "peers")
BASELINE = "iptables"
LOOPBACK = "loopback"


def _link_text(name: str, link: Mapping[str, Any]) -> str:
    parts = []
    if link.get("mtu") is not None:
        parts.append(f"MTU {link['mtu']}")
    if link.get("delay_ms") is not None:
        parts.append(f"delay {link['delay_ms']:g} ms each way")
    if link.get("rate_mbit") is not None:
        parts.append(f"rate {link['rate_mbit']:g} Mbit/s")
    return f"{name} " + ", ".join(parts)


DEFAULT_MTU = 1500  # a veth's MTU when the topology sets none


def topology_label(topology: TopologyInfo | None) -> str:
    """Short name of a header's topology: 'loopback', 'netns', 'netns (client_edge MTU 9000)', 'hosts'.

    Link settings that differ from the defaults (MTU 1500, no shaping) are part of the name: runs
    with other link settings are another topology and are never pooled with these.
    """
    t = topology or LOOPBACK_INFO
    kind = t.kind
    links = {}
    for name, v in (t.links or {}).items():
        v = {k: x for k, x in (v or {}).items() if not (k == "mtu" and x == DEFAULT_MTU)}
        if v:
            links[name] = v
    if kind == "netns" and links:
        return f"netns ({'; '.join(_link_text(k, v) for k, v in sorted(links.items()))})"
    return kind


def describe_topology(topology: TopologyInfo | None) -> str:
    """One sentence: where the roles ran, addresses, links as the kernel applied them."""
    t = topology or LOOPBACK_INFO
    kind = t.kind
    if kind == LOOPBACK:
        return "loopback: client, forwarder and target on this host's 127.0.0.1 (lo, MTU 65536)."
    if kind == "netns":
        ns, a = t.namespaces or {}, t.addresses or {}
        ifaces = (t.applied or {}).get("interfaces") or {}
        mtus = sorted({f"{v.get('link')} MTU {v.get('mtu')}" for v in ifaces.values()})
        shaped = sorted({f"{k.split('/')[-1]}@{k.split('/')[0]}: {q}" for k, v in ifaces.items()
                         for q in v.get("qdiscs", []) if q.split()[0] in ("netem", "tbf")})
        return (f"netns: {ns.get('client')} ({a.get('client')}) → {ns.get('edge')} (listens on "
                f"{a.get('edge_client_side')}, dials from {a.get('edge_target_side')}) → {ns.get('target')} "
                f"({a.get('target')}), veth pairs; control server in {t.control or 'edge'}; "
                f"{', '.join(mtus) or 'default MTU'}; "
                + (f"shaping: {'; '.join(shaped)}." if shaped else "no delay or rate shaping."))
    roles = t.roles or {}
    return (f"{kind}: " + ", ".join(f"{r} on {v.get('name')}" for r, v in roles.items())
            + f"; edge {(t.addresses or {}).get('edge')}, target {(t.addresses or {}).get('target')}.")


def same_topology(rs: ResultSet, sets: Sequence[ResultSet]) -> list[ResultSet]:
    """The files of `sets` that ran on the same topology as rs (cross-file summaries stay within one)."""
    label = topology_label(rs.header.topology)
    return [o for o in sets if topology_label(o.header.topology) == label]


@dataclass(frozen=True)
class TopologyRow:
    path: str
    throughput_mbps: dict[str, Summary]  # topology label -> summary over that topology's runs
    pct_of_baseline: dict[str, float | None]  # topology label -> median / iptables median * 100
    vs_first_pct: float | None  # second topology's median as % of the first's (netns / loopback)


@dataclass(frozen=True)
class TopologyComparison:
    labels: tuple[str, ...]  # loopback first
    rows: tuple[TopologyRow, ...]
    files: dict[str, tuple[str, ...]]  # label -> result file names
    ratio_median_pct: float | None  # median over paths of vs_first_pct
    largest_drop: TopologyRow | None  # lowest vs_first_pct
    rank_changes: tuple[str, ...]  # paths whose order relative to the baseline flips


def summarise_topologies(sets: Sequence[ResultSet]) -> TopologyComparison | None:
    """Per path, throughput on each topology (headline-style records); None if only one topology is present."""
    by_label: dict[str, list[ResultSet]] = {}
    for rs in sets:
        if rs.header.kind in THROUGHPUT_KINDS:
            by_label.setdefault(topology_label(rs.header.topology), []).append(rs)
    if len(by_label) < 2:
        return None
    labels = tuple(sorted(by_label, key=lambda lab: (lab != LOOPBACK, lab)))
    values: dict[tuple[str, str], list[float]] = {}
    # Rows in the order the experiment files list their paths (loopback's first).
    order = list(dict.fromkeys(p for lab in labels for rs in by_label[lab] for p in rs.header.config.paths))
    for lab in labels:
        for rs in by_label[lab]:
            for r in rs.records:
                if r.ok and r.driver == "iperf3" and r.offered_mbps is None and r.cap_bytes_per_s is None:
                    values.setdefault((r.path, lab), []).append(float(r.throughput_mbps or 0.0))
    order = [p for p in order if any((p, lab) in values for lab in labels)]
    rows = []
    for path in order:
        tp = {lab: summarise(values.get((path, lab), [])) for lab in labels}
        pct = {lab: ratio_pct(tp[lab].median, summarise(values.get((BASELINE, lab), [])).median) for lab in labels}
        rows.append(TopologyRow(path, tp, pct, ratio_pct(tp[labels[1]].median, tp[labels[0]].median)))
    both = [r for r in rows if r.vs_first_pct is not None]
    ratio_median = summarise(r.vs_first_pct for r in both).median
    drop = min(both, key=lambda r: r.vs_first_pct or 0.0, default=None)
    flips = tuple(r.path for r in rows if r.path != BASELINE and None not in (
        r.pct_of_baseline[labels[0]], r.pct_of_baseline[labels[1]])
        and ((r.pct_of_baseline[labels[0]] or 0) >= 100.0) != ((r.pct_of_baseline[labels[1]] or 0) >= 100.0))
    files = {lab: tuple(rs.path.name for rs in by_label[lab]) for lab in labels}
    return TopologyComparison(labels, tuple(rows), files, ratio_median, drop, flips)
