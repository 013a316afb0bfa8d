"""Peers: the headline run over the comparable forwarders; each one against iptables and Portunus.

Same records and statistics as the headline (summarise_headline: median
[min-max] over interleaved rounds, ratios of medians), plus what a reader of
the spec's "Comparable Forwarders" table needs next to each number: which
forwarder and variant a path is, its buffer setting, whether a splice path
really spliced, and Portunus's throughput as a ratio of each peer's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from harness.kinds.headline import summarise_headline
from harness.records.results import Record
from harness.summarise.stats import Summary, ratio_pct

BASELINE = "iptables"  # the spec's 100% line
PORTUNUS = "standalone"  # "Portunus" in ratios: the splice fast path, what users get by default

# path -> (forwarder, variant): the spec's columns and how each was run here.
PEER_LABELS: dict[str, tuple[str, str]] = {
    "direct": ("no forwarder", "iperf3 to iperf3"),
    "reference": ("C splice reference", "tools/csplice.c"),
    "standalone": ("Portunus", "splice fast path (default)"),
    "standalone_copy": ("Portunus", "userspace copy path (PORTUNUS_DISABLE_SPLICE=1)"),
    "client": ("Portunus", "client, rule pushed by the server"),
    "iptables": ("iptables", "REDIRECT, nat OUTPUT"),
    "nftables": ("nftables", "DNAT, nat output chain"),
    "haproxy": ("HAProxy TCP mode", "defaults"),
    "haproxy_bigbuf": ("HAProxy TCP mode", "tune.bufsize 256 KiB"),
    "haproxy_splice": ("HAProxy TCP mode", "option splice-request/-response"),
    "nginx": ("NGINX stream", "defaults"),
    "nginx_bigbuf": ("NGINX stream", "proxy_buffer_size 256k"),
    "socat": ("socat", "defaults (-b 8192)"),
    "socat_bigbuf": ("socat", "-b 262144"),
    "rinetd": ("rinetd", "defaults"),
    "ssh": ("SSH -L", "OpenSSH defaults"),
}

# Forwarders of the spec's table that this host cannot run, and why (shown, not silently left out).
NOT_MEASURED: dict[str, str] = {
    "Envoy tcp_proxy": "not packaged in Debian 12 (no `envoy` package in bookworm); not measured here",
}

# path_info keys that carry a path's buffer size (bytes), per peer module.
_BUFFER_KEYS = ("buffer_bytes", "bufsize_bytes", "proxy_buffer_bytes")


def label(path: str) -> tuple[str, str]:
    """(forwarder, variant) of a path; unknown paths are their own forwarder."""
    return PEER_LABELS.get(path, (path, ""))


@dataclass(frozen=True)
class PeerRow:
    path: str
    forwarder: str
    variant: str
    throughput_mbps: Summary
    cpu_s_per_gb: Summary
    n_failed: int
    pct_of_iptables: float | None  # this path's median / iptables' median * 100
    pct_of_direct: float | None
    portunus_pct: float | None  # Portunus (standalone) median / this path's median * 100
    buffer_bytes: int | None  # the forwarder's buffer setting, where it has one
    spliced: bool | None  # haproxy: pipe fds seen during the traffic (True in every run); None: not checked


@dataclass(frozen=True)
class PeersSummary:
    rows: tuple[PeerRow, ...]
    notes: tuple[str, ...]
    not_measured: tuple[tuple[str, str], ...]

    def get(self, path: str) -> PeerRow | None:
        return next((r for r in self.rows if r.path == path), None)


def summarise_peers(records: Iterable[Record], path_order: Sequence[str] = ()) -> PeersSummary:
    """Per path: throughput median [min-max], % of iptables and direct, Portunus as % of it."""
    records = list(records)
    head = summarise_headline(records, path_order)
    medians = {p.path: p.throughput_mbps.median for p in head.paths}
    ok = [r for r in records if r.ok and r.cap_bytes_per_s is None and r.offered_mbps is None]
    rows = []
    notes = list(head.notes)
    for p in head.paths:
        mine = [r for r in ok if r.path == p.path]
        buf = next((r.path_info[k] for r in mine for k in _BUFFER_KEYS if r.path_info.get(k) is not None), None)
        checked = [r.path_info["spliced"] for r in mine if "spliced" in r.path_info]
        spliced = (all(checked) if checked else None)
        if checked and any(checked) and not all(checked):
            notes.append(f"{p.path}: spliced in {sum(checked)} of {len(checked)} runs only (pipe fds seen)")
        if p.path == "haproxy_splice" and checked and not any(checked):
            notes.append("haproxy_splice: no pipe fds were seen during any run: HAProxy did NOT splice here; "
                         "its numbers are a copy path's")
        forwarder, variant = label(p.path)
        rows.append(PeerRow(
            path=p.path, forwarder=forwarder, variant=variant, throughput_mbps=p.throughput_mbps,
            cpu_s_per_gb=p.cpu_s_per_gb, n_failed=p.n_failed,
            pct_of_iptables=ratio_pct(medians.get(p.path), medians.get(BASELINE)),
            pct_of_direct=ratio_pct(medians.get(p.path), medians.get("direct")),
            portunus_pct=ratio_pct(medians.get(PORTUNUS), medians.get(p.path)),
            buffer_bytes=int(buf) if buf is not None else None, spliced=spliced,
        ))
    return PeersSummary(tuple(rows), tuple(notes), tuple(NOT_MEASURED.items()))
