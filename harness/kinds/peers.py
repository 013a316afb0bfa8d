"""Peers: the headline run over the comparable forwarders; each one against iptables and Portunus.

Same records and statistics as the headline (summarise_headline: median
[min-max] over interleaved rounds, ratios of medians), plus what a reader of
the spec's "Comparable Forwarders" table needs next to each number: which
forwarder and variant a path is, its buffer setting, whether a splice path
really spliced, and Portunus's throughput as a ratio of each peer's.

The whole kind in one module: its summary (pure statistics over the records), its report
section, its figures, and `KIND`, which harness/kinds/__init__.py registers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from harness.kinds.base import FileSummary, Kind, ReportContext
from harness.kinds.connrate import ConnrateSummary
from harness.kinds.headline import summarise_headline
from harness.kinds.http import HttpSummary
from harness.kinds.latency import LatencySummary
from harness.kinds.udp import UdpSummary
from harness.present.cost import SOFTIRQ_ATTRIBUTION, render_cost_table
from harness.present.format import (
    DASH,
    fmt_bytes,
    fmt_count,
    fmt_cpu,
    fmt_mbps,
    fmt_pct,
    fmt_range,
    fmt_rate,
    fmt_us,
    no_cpu,
    notes_block,
    table,
)
from harness.present.plots import FIG_SIZE_IN, caption, color, finish, hbars, new_figure
from harness.records.header import PathFacts
from harness.records.results import Record, ResultSet
from harness.summarise.cost import (
    CostCell,
    CostTable,
    build_cost_table,
    connections_of,
    datagrams_of,
    gb_of,
    summarise_cost_cells,
)
from harness.summarise.stats import Summary, ratio_pct

if TYPE_CHECKING:
    from matplotlib.figure import Figure

T = TypeVar("T")

BASELINE = "iptables"  # the spec's 100% line
PORTUNUS = "standalone"  # "Portunus" in ratios: the splice fast path, what users get by default

# path -> (forwarder, variant): the spec's columns and how each was run here.
PEER_LABELS: dict[str, tuple[str, str]] = {
    "direct": ("no forwarder", "iperf3 to iperf3"),
    "reference": ("C splice reference", "tools/csplice.c"),
    "standalone": ("Portunus", "splice fast path (default)"),
    "standalone_copy": ("Portunus", "userspace copy path (PORTUNUS_DISABLE_SPLICE=1)"),
    "standalone_w2": ("Portunus", "workers = 2"),
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


# ---------------------------------------------------------------- report section


def render_peers_table(s: PeersSummary, facts: Mapping[str, PathFacts]) -> str:
    """One row per path: throughput median [min-max], % of iptables, Portunus as % of it, CPU, buffer."""
    header = ["Forwarder", "Variant", "Path", "Throughput, Mbit/s: median [min–max]", "% of iptables",
              f"`{PORTUNUS}` ÷ this", "Forwarder CPU, s/GB", "Buffer", "Runs (n)"]
    rows = []
    for r in s.rows:
        variant = r.variant + ("" if r.spliced is None else (" (spliced: pipes seen)" if r.spliced
                                                              else " (no splice: no pipes seen)"))
        rows.append([r.forwarder, variant, f"`{r.path}`", fmt_range(r.throughput_mbps), fmt_pct(r.pct_of_iptables, 0),
                     fmt_pct(r.portunus_pct, 0),
                     fmt_cpu(r.cpu_s_per_gb) if r.cpu_s_per_gb.n else no_cpu(r.path, facts.get(r.path)),
                     fmt_bytes(r.buffer_bytes), f"{r.throughput_mbps.n}" + (f" ({r.n_failed} failed)" if r.n_failed else "")])
    return table(header, rows)


def _udp_pps_cell(udp: UdpSummary, path: str, size: int, facts: Mapping[str, PathFacts]) -> str:
    """The most datagrams/s a path delivered at < 1% loss at one size (packet-rate udp files)."""
    m = udp.max_rate(path, size)
    if m is None:
        f = facts.get(path)
        if f is not None and "udp" not in f.protocols:
            return DASH
        return "failed" if any(r.path == path for r in udp.rows) else "not run"
    if m.delivered_pps is None:
        return "none below 1% loss"
    return f"{'≥ ' if m.below_every_rate else ''}{fmt_count(m.delivered_pps)}"


def _http_cell(http: HttpSummary, path: str, mode: str, size: int) -> str:
    c = http.cell(path, mode, size)
    if c is None:
        return DASH
    if not c.requests_per_s.n:
        return f"failed ({c.n_failed} run(s))"
    return f"{fmt_count(c.requests_per_s.median)} ({fmt_pct(c.pct_of_ceiling, 0)})"


def render_peers_overview(peers: PeersSummary | None, lat: LatencySummary | None, cr: ConnrateSummary | None,
                          udp: UdpSummary | None, facts: Mapping[str, PathFacts],
                          http: HttpSummary | None = None) -> str:
    """Every forwarder across the experiments of this directory: the spec's comparison table, measured.

    facts: what the files' headers recorded about each path (a TCP-only path shows no UDP cell).
    """
    order = list(dict.fromkeys([r.path for r in (peers.rows if peers else ())]
                               + [r.path for r in (lat.rows if lat else ())]
                               + [r.path for r in (cr.rows if cr else ())] + list(udp.paths if udp else ())
                               + list(http.paths if http else ())))
    pps_size = min(udp.sizes) if udp and udp.packet_rates and udp.sizes else None
    top = max(udp.rates_mbps) if udp and udp.rates_mbps and pps_size is None else None
    http_modes = [m for m in ("close", "keepalive") if http and m in http.modes]
    http_size = min(http.sizes) if http and http.sizes else None
    header = ["Forwarder (variant)", "TCP throughput, % of iptables", "Setup p50, µs", "RTT p50, µs",
              "Connections/s (% of ceiling)"]
    if top is not None:
        header.append(f"UDP at {fmt_rate(top)} Mbit/s: delivered, loss")
    if pps_size is not None:
        header.append(f"UDP, {pps_size}-byte datagrams: most delivered/s at < 1% loss")
    for mode in http_modes:
        header.append(f"HTTP {fmt_bytes(http_size)}, {'one connection per request' if mode == 'close' else 'keep-alive'}"
                      ": requests/s (% of direct)")
    rows = []
    for path in order:
        forwarder, variant = label(path)
        p = peers.get(path) if peers else None
        lr = lat.get(path) if lat else None
        c = cr.get(path) if cr else None
        row = [f"{forwarder}: {variant} `{path}`" if variant else f"`{path}`",
               fmt_pct(p.pct_of_iptables, 0) if p else DASH,
               fmt_us(lr.setup_p50_us.median) if lr else DASH,
               fmt_us(lr.rtt_p50_us.median) if lr else DASH,
               f"{fmt_count(c.conn_per_s.median)} ({fmt_pct(c.pct_of_ceiling, 0)})" if c and c.conn_per_s.n else DASH]
        if top is not None and udp is not None:
            u = udp.cell(path, top)
            if u is None:
                f = facts.get(path)
                row.append(DASH if f is not None and "udp" not in f.protocols else "not run")
            elif not u.delivered_mbps.n:
                row.append(f"failed ({u.n_failed} run(s))")
            else:
                row.append(f"{fmt_mbps(u.delivered_mbps.median)} Mbit/s, {fmt_pct(u.loss_pct.median)}")
        if pps_size is not None and udp is not None:
            row.append(_udp_pps_cell(udp, path, pps_size, facts))
        if http is not None and http_size is not None:
            row += [_http_cell(http, path, mode, http_size) for mode in http_modes]
        rows.append(row)
    return table(header, rows)


def _summary_of(fs: FileSummary[Any] | None, cls: type[T]) -> T | None:
    return fs.summary if fs is not None and isinstance(fs.summary, cls) else None


def _section(fs: FileSummary[PeersSummary], ctx: ReportContext) -> list[str]:
    s = fs.summary
    out = ["Every forwarder on this host, one at a time, in the same interleaved rounds: same iperf3 target, "
           "duration and warm-up. Each peer runs with its defaults (what users get) and, where it has a buffer "
           "setting, again with buffers comparable to Portunus's copy path (256 KiB). Throughput is iperf3's "
           f"sender side; `{PORTUNUS}` ÷ this > 100% means Portunus (splice fast path) is faster.",
           render_peers_table(s, fs.header.path_facts)]
    # The newest latency / connrate / udp files of the directory, on this file's topology.
    others = {k: ctx.latest(k, fs) for k in ("latency", "connrate", "udp", "http")}
    if any(others.values()):
        lat = _summary_of(others["latency"], LatencySummary)
        cr = _summary_of(others["connrate"], ConnrateSummary)
        udp = _summary_of(others["udp"], UdpSummary)
        http = _summary_of(others["http"], HttpSummary)
        facts = {p: f for o in (*others.values(), fs) if o is not None for p, f in o.header.path_facts.items()}
        out += ["All experiments of this directory at a glance (medians over rounds; details in their sections):",
                render_peers_overview(s, lat, cr, udp, facts, http)]
    cost = cost_table(fs, others["connrate"], others["udp"])
    if any(c.host.n for cells in cost.cells.values() for c in cells.values()):
        kernel = frozenset(p for o in (fs, *others.values()) if o is not None
                           for p, f in o.header.path_facts.items() if not f.forwarder_process)
        out += ["CPU per unit of work (medians over rounds): the forwarder process tree's, and the whole host's "
                "(all cores, every process and the kernel) over the same client run; bytes from this experiment, "
                "connections from connrate, datagrams from udp at its highest offered rate.",
                render_cost_table(cost, kernel), SOFTIRQ_ATTRIBUTION]
    out.append("Not measured here:\n\n" + "\n".join(f"- {name}: {why}" for name, why in s.not_measured))
    notes = list(s.notes)
    for r in s.rows:
        f = fs.header.path_facts.get(r.path)
        if f is not None and not f.half_close:
            notes.append(f"{r.path}: no TCP half-close (on the first EOF it closes both ways; a reply still in "
                         "flight is lost). iperf3 never half-closes mid-test, so the throughput stands.")
    return out + notes_block(notes)


def cost_table(peers: FileSummary[Any], connrate: FileSummary[Any] | None, udp: FileSummary[Any] | None) -> CostTable:
    """CPU per GB (this file's uncapped runs), per connection (connrate), per datagram (udp, top rate)."""
    by_unit: dict[str, dict[str, CostCell]] = {
        "GB": summarise_cost_cells((r for r in peers.result_set.records
                                    if r.cap_bytes_per_s is None and r.offered_mbps is None), "GB", gb_of)}
    if connrate is not None:
        by_unit["connection"] = summarise_cost_cells(connrate.result_set.records, "connection", connections_of)
    if udp is not None:
        ucfg = udp.config
        # The highest offered rate, in the unit the config offers it (Mbit/s or datagrams/s), and
        # of that, the largest datagram size measured (schema 5 records carry their own size).
        sizes = [b for b in ucfg.datagram_sizes if b]
        if sizes and (ucfg.offered_mbps or ucfg.offered_pps):
            size = max(sizes)
            if ucfg.offered_pps:
                top_pps = max(ucfg.offered_pps)
                picked = [r for r in udp.result_set.records if r.offered_pps == top_pps
                          and (r.datagram_bytes or size) == size]
            else:
                top = max(ucfg.offered_mbps)
                picked = [r for r in udp.result_set.records if r.offered_mbps == top
                          and (r.datagram_bytes or size) == size]
            by_unit["datagram"] = summarise_cost_cells(picked, "datagram", datagrams_of(size))
    return build_cost_table(by_unit, peers.config.paths)


# ---------------------------------------------------------------- figures


def plot_peers(s: PeersSummary, cap: str) -> Figure:
    """Throughput per forwarder (median, min-max) with the iptables line; label: path and % of iptables."""
    fig, ax = new_figure("Comparable forwarders: uncapped TCP throughput", cap)
    fig.set_size_inches(FIG_SIZE_IN[0], max(FIG_SIZE_IN[1], 0.38 * len(s.rows) + 1.5))
    rows = [r for r in s.rows if r.throughput_mbps.n]
    labels = [f"{r.path}  ({r.pct_of_iptables:.0f}%)" if r.pct_of_iptables is not None else r.path for r in rows]
    hbars(ax, labels, [r.throughput_mbps for r in rows], [color(r.path, i) for i, r in enumerate(rows)])
    base = s.get("iptables")
    if base is not None and base.throughput_mbps.median is not None:
        ax.axvline(base.throughput_mbps.median, color="tab:blue", linestyle="--", linewidth=1,
                   label="iptables median (100%)")
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xlabel("Throughput, Mbit/s (iperf3 sender side; median, whiskers min–max)")
    ax.grid(axis="x", alpha=0.3)
    return finish(fig)


def _figures(fs: FileSummary[PeersSummary]) -> dict[str, Figure]:
    s = fs.summary
    return {"throughput": plot_peers(s, caption(fs.header))} if s.rows else {}


# ---------------------------------------------------------------- the kind


def _summarise(rs: ResultSet, same_topology: Sequence[ResultSet]) -> PeersSummary:
    return summarise_peers(rs.records, rs.header.config.paths)


KIND = Kind(name="peers", driver="iperf3", summarise=_summarise, section=_section, figures=_figures)
