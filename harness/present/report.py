"""Markdown report over the result files of a directory: pure render_* functions, no I/O.

    render_report(result_sets)   # title, how to read, the host block once, one section per file
    render_readme_results(...)   # the same sections for the README (between its results markers)

Sections are chosen by experiment kind through SECTIONS: adding a kind is one
`render_<kind>_section(rs, ctx) -> list[str]` (markdown blocks) plus one
entry there. Sections appear in SECTIONS order. Tables follow the spec's
layout (paths as columns for the headline; offered rate as rows for the
sweep); every number comes from the summaries in harness.experiments.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from harness.experiments import (
    AbSummary,
    CappedSummary,
    HeadlineSummary,
    SweepSummary,
    summarise_ab,
    summarise_capped,
    summarise_headline,
    summarise_sweep,
)
from harness.kinds.connrate import ConnrateSummary, summarise_connrate
from harness.kinds.headline import BASELINES
from harness.kinds.latency import LatencySummary, summarise_latency
from harness.kinds.peers import PORTUNUS, PeersSummary, summarise_peers
from harness.kinds.peers import label as peer_label
from harness.kinds.sweep import CAPACITY_PATH, KEEPS_UP_PCT
from harness.kinds.udp import UdpSummary, summarise_udp
from harness.paths import PATHS
from harness.records.results import Header, Record, ResultSet
from harness.summarise.stats import Summary
from harness.summarise.topology import (
    TopologyComparison,
    describe_topology,
    same_topology,
    summarise_topologies,
)

DASH = "–"
# What the CPU row says for paths with no forwarder process to measure.
NO_FORWARDER_CPU = {"direct": "none (no forwarder)", "iptables": "kernel (not attributable)"}
ABOVE_CAPACITY_MARK = "‡"

HOW_TO_READ = (
    "How to read: throughput is iperf3's sender-side rate over the non-omitted seconds, taken the same "
    "way for every path (cap accuracy uses the receiver side: the bytes that actually crossed the cap). "
    "Paths are measured one at a time in interleaved, shuffled rounds, so compare them as ratios within "
    "one run, not as absolute numbers across hosts or days. Uncapped maxima are median [min–max] over the "
    "rounds: where ranges overlap, the run does not rank the paths (see the notes under each table).")


# ---------------------------------------------------------------- number formats


def fmt_mbps(v: float | None) -> str:
    """Mbit/s with as many digits as the magnitude deserves."""
    if v is None:
        return DASH
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:,.1f}"
    return f"{v:.3f}"


def fmt_rate(v: float) -> str:
    """An offered rate as configured: '100', '12,500', '0.5'."""
    return f"{v:,.0f}" if v == int(v) else f"{v:,g}"


def fmt_pct(v: float | None, digits: int = 1) -> str:
    return DASH if v is None else f"{v:.{digits}f}%"


def fmt_range(s: Summary, fmt: Callable[[float | None], str] = fmt_mbps) -> str:
    """'median [min–max]', or the single value when n == 1."""
    if s.n == 0:
        return DASH
    if s.n == 1:
        return fmt(s.median)
    return f"{fmt(s.median)} [{fmt(s.min)}{DASH}{fmt(s.max)}]"


def fmt_cpu(s: Summary) -> str:
    return DASH if s.median is None else f"{s.median:.3f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], align_first_left: bool = True) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join(("---" if i == 0 and align_first_left else "---:") for i in range(len(header))) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _notes_block(notes: Sequence[str]) -> list[str]:
    return ["Notes:\n\n" + "\n".join(f"- {n}" for n in notes)] if notes else []


# ---------------------------------------------------------------- tables


def render_headline_table(summary: HeadlineSummary) -> str:
    """Paths as columns: throughput median [min-max], n, ratios vs baselines, forwarder CPU s/GB."""
    cols = summary.paths
    header = [""] + [f"`{p.path}`" for p in cols]
    rows = [
        ["Throughput, Mbit/s: median [min–max]"] + [fmt_range(p.throughput_mbps) for p in cols],
        ["Runs (n)"] + [f"{p.throughput_mbps.n}" + (f" ({p.n_failed} failed)" if p.n_failed else "") for p in cols],
    ]
    present = {p.path for p in cols}
    for b in BASELINES:
        if b in present:
            rows.append([f"vs `{b}` (ratio of medians)"] + [fmt_pct(p.vs_pct.get(b)) for p in cols])
    rows.append(["Forwarder CPU, s/GB: median"] + [
        fmt_cpu(p.cpu_s_per_gb) if p.cpu_s_per_gb.n else NO_FORWARDER_CPU.get(p.path, DASH)
        for p in cols])
    rows.append(["Retransmits: median"] + [
        DASH if p.retransmits.median is None else f"{p.retransmits.median:,.0f}" for p in cols])
    return _table(header, rows)


def render_ab_table(s: AbSummary) -> str:
    """The spec's pairs table: one row per round, then the medians."""
    header = ["Round", f"`{s.a}`, Mbit/s", f"`{s.b}`, Mbit/s", f"{s.a} / {s.b}"]
    rows = [[f"{r.round}", fmt_mbps(r.a_mbps), fmt_mbps(r.b_mbps), fmt_pct(r.ratio_pct)] for r in s.rows]
    rows.append(["**median**", f"**{fmt_mbps(s.a_mbps.median)}**", f"**{fmt_mbps(s.b_mbps.median)}**",
                 f"**{fmt_pct(s.ratio_pct.median)}**"])
    table = _table(header, rows, align_first_left=False)
    swing = ""
    if s.ratio_pct.n > 1:
        swing = (f"\n\nPer-round ratio swings from {fmt_pct(s.ratio_pct.min)} to {fmt_pct(s.ratio_pct.max)}; "
                 f"ratio of the medians: {fmt_pct(s.ratio_of_medians_pct)}.")
    return table + swing


def render_capped_table(s: CappedSummary) -> str:
    """Delivered (receiver side) vs cap per (path, cap), with the spec's bound and the tighter goal."""
    header = ["Path", "Cap, B/s", "Target, Mbit/s", "Delivered, Mbit/s: median [min–max]", "Error",
              f"≤ +{s.bound_pct:g}%", f"within ±{s.goal_pct:g}%", "Sender side, Mbit/s (not used)"]
    rows = []
    for r in s.rows:
        n = r.delivered_mbps.n
        rows.append([f"`{r.path}`", f"{r.cap_bytes_per_s:,}", fmt_mbps(r.target_mbps), fmt_range(r.delivered_mbps),
                     DASH if r.error_pct is None else f"{r.error_pct:+.2f}%",
                     f"{'yes' if r.within_bound else 'NO'} ({r.n_within_bound}/{n} runs)",
                     f"{'yes' if r.within_goal else 'no'} ({r.n_within_goal}/{n} runs)",
                     fmt_mbps(r.sender_mbps.median)])
    return _table(header, rows)


def render_sweep_table(s: SweepSummary) -> str:
    """Offered rate as rows; per path the delivered median (Mbit/s) and delivered / offered."""
    header = ["Offered, Mbit/s"]
    for p in s.paths:
        header += [f"`{p}`", "%"]
    rows = []
    for rate in s.rates_mbps:
        label = fmt_rate(rate) + (f" {ABOVE_CAPACITY_MARK}" if s.above_capacity(rate) else "")
        cells = [label]
        for p in s.paths:
            c = s.cell(p, rate)
            if c is None:
                cells += [DASH, DASH]
            else:
                cells += [fmt_mbps(c.delivered_mbps.median), fmt_pct(c.pct_of_offered)]
        rows.append(cells)
    return _table(header, rows, align_first_left=False)


def render_sweep_findings(s: SweepSummary) -> list[str]:
    """The host's capacity and where each path stops delivering the offered rate."""
    out = []
    c = s.capacity
    if c is not None and c.throughput_mbps.n:
        if c.lower_bound:
            out.append(f"Capacity of this host: the `{c.path}` path (iperf3 to iperf3, no forwarder) delivered every "
                       f"offered rate, up to {fmt_mbps(c.throughput_mbps.median)} Mbit/s; its ceiling is higher "
                       "(run the headline experiment into the same directory to measure it).")
        else:
            out.append(f"Capacity of this host: the `{c.path}` path (iperf3 to iperf3, no forwarder) carries "
                       f"{fmt_range(c.throughput_mbps)} Mbit/s ({c.source}). Rows marked {ABOVE_CAPACITY_MARK} "
                       "offer more than its median: no path can deliver them here, so those rows show the "
                       "host's limit, not the forwarders'.")
    lines = []
    for p in s.paths:
        short = s.shortfalls(p)
        if not short:
            kept = [r for r in s.rows if r.path == p and r.keeps_up]
            if kept:
                lines.append(f"`{p}` delivers ≥ {KEEPS_UP_PCT:g}% of the offered rate at every rate measured.")
            continue
        first = short[0]
        at = ", ".join(fmt_rate(r.offered_mbps) for r in short)
        where = ""
        if s.above_capacity(first.offered_mbps):
            where = ", above the host's capacity"
        elif c is not None and not c.lower_bound:
            where = ", below the host's capacity: the path itself, or its share of the CPU, is the limit there"
        base = s.cell(CAPACITY_PATH, first.offered_mbps) if p != CAPACITY_PATH else None
        if base is not None:
            where += f"; `{CAPACITY_PATH}` at that rate: {fmt_pct(base.pct_of_offered)}"
        lines.append(f"`{p}` falls below {KEEPS_UP_PCT:g}% of the offered rate at {at} Mbit/s; first at "
                     f"{fmt_rate(first.offered_mbps)}: {fmt_mbps(first.delivered_mbps.median)} Mbit/s delivered "
                     f"({fmt_pct(first.pct_of_offered)}{where}).")
    if lines:
        out.append("Where the paths diverge from the offered rate:\n\n" + "\n".join(f"- {x}" for x in lines))
    return out


def render_sysinfo(h: Header) -> str:
    """One compact block: where and from what these numbers came."""
    si = h.sysinfo
    commit = (si.commit or "?")[:12] + (" (dirty)" if si.dirty else "")
    sysctls = si.sysctls or {}
    return "\n".join([
        "```text",
        f"commit {commit}; {si.distro}; kernel {si.kernel}",
        f"{si.cpu_model} ({si.cpu_cores} cores, governor {si.cpu_governor or 'n/a'})",
        f"{si.iperf3}; {si.iptables}; Python {si.python}",
        "sysctls: " + ", ".join(f"{k}={v}" for k, v in sysctls.items()),
        "```",
    ])


# ---------------------------------------------------------------- sections by kind


@dataclass(frozen=True)
class ReportContext:
    """What a section may use beyond its own file: the other files of the directory, the plot files."""

    result_sets: tuple[ResultSet, ...] = ()
    plots: Mapping[str, Sequence[str]] = field(default_factory=dict)  # result file name -> plot paths

    def unpaced_records(self, like: ResultSet | None = None) -> list[Record]:
        """Uncapped, unpaced records of every file (headline-style runs): the host's capacity.

        With `like`, only files that ran on the same topology (loopback numbers never stand in for netns ones).
        """
        sets = self.result_sets if like is None else same_topology(like, self.result_sets)
        return [r for rs in sets for r in rs.records if r.offered_mbps is None and r.cap_bytes_per_s is None]

    def plot_links(self, rs: ResultSet) -> list[str]:
        return [f"![{p.rsplit('/', 1)[-1]}]({p})" for p in self.plots.get(rs.path.name, ()) if p.endswith(".png")]


SectionRenderer = Callable[[ResultSet, ReportContext], list[str]]


def render_headline_section(rs: ResultSet, ctx: ReportContext) -> list[str]:
    s = summarise_headline(rs.records, rs.header.config.paths)
    return [render_headline_table(s), *_notes_block(s.notes)]


def render_ab_section(rs: ResultSet, ctx: ReportContext) -> list[str]:
    cfg = rs.header.config
    a, b = cfg.ab_pair
    s = summarise_ab(rs.records, a, b)
    return [render_ab_table(s), *_notes_block(s.notes)]


def render_capped_section(rs: ResultSet, ctx: ReportContext) -> list[str]:
    cfg = rs.header.config
    s = summarise_capped(rs.records, cfg.cap_bound_pct, cfg.cap_goal_pct)
    return ["Delivered = iperf3's receiver-side rate over the non-omitted seconds: the bytes that crossed the "
            "capped forwarder. The sender side is shown but not used: at low caps it measures what the socket "
            "buffers absorbed, not the cap.", render_capped_table(s)]


def render_sweep_section(rs: ResultSet, ctx: ReportContext) -> list[str]:
    s = summarise_sweep(rs.records, rs.header.config.paths, ctx.unpaced_records(rs))
    return ["Delivered = iperf3's sender-side rate (median over the rounds) at each offered rate (`iperf3 -b`); "
            "% = delivered / offered.", render_sweep_table(s), *render_sweep_findings(s), *_notes_block(s.notes)]


def render_unknown_section(rs: ResultSet, ctx: ReportContext) -> list[str]:
    """A kind this report has no section for: say so, and show the per-path throughput anyway."""
    out = [f"This version of the report has no section for kind `{rs.header.kind}`; per-path throughput of "
           "its unpaced, uncapped runs follows."]
    s = summarise_headline(rs.records, rs.header.config.paths)
    if s.paths:
        out.append(render_headline_table(s))
    return out


# ---------------------------------------------------------------- peers, latency, connrate, udp


def fmt_us(v: float | None) -> str:
    """Microseconds: one decimal below 100 µs, whole µs above."""
    if v is None:
        return DASH
    return f"{v:.1f}" if abs(v) < 100 else f"{v:,.0f}"


def fmt_signed_us(v: float | None) -> str:
    return DASH if v is None else ("+" if v >= 0 else "−") + fmt_us(abs(v))


def fmt_count(v: float | None) -> str:
    return DASH if v is None else f"{v:,.0f}"


def fmt_bytes(v: int | None) -> str:
    if v is None:
        return DASH
    return f"{v // 1024} KiB" if v % 1024 == 0 else f"{v:,} B"


def _no_cpu(path: str) -> str:
    """What a CPU cell says for a path without a forwarder process of its own."""
    if path in NO_FORWARDER_CPU:
        return NO_FORWARDER_CPU[path]
    cls = PATHS.get(path)
    return "kernel (not attributable)" if cls is not None and not cls.has_forwarder_process else DASH


def _latest(ctx: ReportContext, kind: str, like: ResultSet | None = None) -> ResultSet | None:
    """The newest result file of a kind in this directory (on like's topology), for the peers overview."""
    pool = ctx.result_sets if like is None else same_topology(like, ctx.result_sets)
    sets = [rs for rs in pool if rs.header.kind == kind]
    return max(sets, key=lambda rs: rs.header.created_at, default=None)


def render_peers_table(s: PeersSummary) -> str:
    """One row per path: throughput median [min-max], % of iptables, Portunus as % of it, CPU, buffer."""
    header = ["Forwarder", "Variant", "Path", "Throughput, Mbit/s: median [min–max]", "% of iptables",
              f"`{PORTUNUS}` ÷ this", "Forwarder CPU, s/GB", "Buffer", "Runs (n)"]
    rows = []
    for r in s.rows:
        variant = r.variant + ("" if r.spliced is None else (" (spliced: pipes seen)" if r.spliced
                                                              else " (no splice: no pipes seen)"))
        rows.append([r.forwarder, variant, f"`{r.path}`", fmt_range(r.throughput_mbps), fmt_pct(r.pct_of_iptables, 0),
                     fmt_pct(r.portunus_pct, 0),
                     fmt_cpu(r.cpu_s_per_gb) if r.cpu_s_per_gb.n else _no_cpu(r.path),
                     fmt_bytes(r.buffer_bytes), f"{r.throughput_mbps.n}" + (f" ({r.n_failed} failed)" if r.n_failed else "")])
    return _table(header, rows)


def render_peers_overview(peers: PeersSummary | None, lat: LatencySummary | None, cr: ConnrateSummary | None,
                          udp: UdpSummary | None) -> str:
    """Every forwarder across the experiments of this directory: the spec's comparison table, measured."""
    order = list(dict.fromkeys([r.path for r in (peers.rows if peers else ())]
                               + [r.path for r in (lat.rows if lat else ())]
                               + [r.path for r in (cr.rows if cr else ())] + list(udp.paths if udp else ())))
    top = max(udp.rates_mbps) if udp and udp.rates_mbps else None
    header = ["Forwarder (variant)", "TCP throughput, % of iptables", "Setup p50, µs", "RTT p50, µs",
              "Connections/s (% of ceiling)"]
    if top is not None:
        header.append(f"UDP at {fmt_rate(top)} Mbit/s: delivered, loss")
    rows = []
    for path in order:
        forwarder, variant = peer_label(path)
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
                row.append(DASH if "udp" not in getattr(PATHS.get(path), "protocols", ("udp",)) else "not run")
            elif not u.delivered_mbps.n:
                row.append(f"failed ({u.n_failed} run(s))")
            else:
                row.append(f"{fmt_mbps(u.delivered_mbps.median)} Mbit/s, {fmt_pct(u.loss_pct.median)}")
        rows.append(row)
    return _table(header, rows)


def render_peers_section(rs: ResultSet, ctx: ReportContext) -> list[str]:
    s = summarise_peers(rs.records, rs.header.config.paths)
    out = ["Every forwarder on this host, one at a time, in the same interleaved rounds: same iperf3 target, "
           "duration and warm-up. Each peer runs with its defaults (what users get) and, where it has a buffer "
           "setting, again with buffers comparable to Portunus's copy path (256 KiB). Throughput is iperf3's "
           f"sender side; `{PORTUNUS}` ÷ this > 100% means Portunus (splice fast path) is faster.",
           render_peers_table(s)]
    others = {k: _latest(ctx, k, rs) for k in ("latency", "connrate", "udp")}
    if any(others.values()):
        lat = summarise_latency(others["latency"].records) if others["latency"] else None
        cr = summarise_connrate(others["connrate"].records) if others["connrate"] else None
        udp = summarise_udp(others["udp"].records) if others["udp"] else None
        out += ["All experiments of this directory at a glance (medians over rounds; details in their sections):",
                render_peers_overview(s, lat, cr, udp)]
    out.append("Not measured here:\n\n" + "\n".join(f"- {name}: {why}" for name, why in s.not_measured))
    notes = list(s.notes)
    for r in s.rows:
        cls = PATHS.get(r.path)
        if cls is not None and not getattr(cls, "half_close", True):
            notes.append(f"{r.path}: no TCP half-close (on the first EOF it closes both ways; a reply still in "
                         "flight is lost). iperf3 never half-closes mid-test, so the throughput stands.")
    return out + _notes_block(notes)


def render_latency_table(s: LatencySummary) -> str:
    """Per path: setup time and RTT p50/p90/p99 (medians over rounds, p50 with [min-max]), added vs the floor."""
    header = ["Path", "Setup p50, µs", "p90", "p99", "Setup added", "RTT p50, µs", "p90", "p99", "RTT added",
              "Samples (setup / RTT)", "Errors"]
    rows = []
    for r in s.rows:
        rows.append([f"`{r.path}`" + (" (floor)" if s.floor is not None and r.path == s.floor.path else ""),
                     fmt_range(r.setup_p50_us, fmt_us), fmt_us(r.setup_p90_us.median), fmt_us(r.setup_p99_us.median),
                     fmt_signed_us(r.added_setup_us), fmt_range(r.rtt_p50_us, fmt_us), fmt_us(r.rtt_p90_us.median),
                     fmt_us(r.rtt_p99_us.median), fmt_signed_us(r.added_rtt_us),
                     f"{r.setup_samples:,} / {r.rtt_samples:,}", f"{r.errors}"])
    return _table(header, rows)


def _probe_settings(rs: ResultSet) -> dict[str, Any]:
    """The file's probe settings by name, '?' for each when it recorded none."""
    probe = rs.header.config.probe
    return probe.to_dict() if probe is not None else defaultdict(lambda: "?")


def render_latency_section(rs: ResultSet, ctx: ReportContext) -> list[str]:
    s = summarise_latency(rs.records, rs.header.config.paths)
    probe = _probe_settings(rs)
    out = [f"Setup = connect() to the first byte of the reply to a 1-byte request sent at once "
           f"({probe['setup_connections']} short connections per round); RTT = 1-byte request to 1-byte "
           f"reply on an open connection ({probe['rtt_connections']} connections x "
           f"{probe['rtt_per_connection']} round trips per round). Measured by the harness's own client "
           "against an echo server, one request in flight; percentiles per round, then the median over rounds "
           "(p50 with [min–max]). Added = the path's p50 minus the floor's."]
    if s.floor is not None:
        out.append(f"Floor (`{s.floor.path}`, no forwarder: the client's and the echo server's own time on this host): "
                   f"setup {fmt_us(s.floor.setup_p50_us.median)} µs, RTT {fmt_us(s.floor.rtt_p50_us.median)} µs (p50).")
    return out + [render_latency_table(s), *_notes_block(s.notes)]


def render_connrate_section(rs: ResultSet, ctx: ReportContext) -> list[str]:
    s = summarise_connrate(rs.records, rs.header.config.paths)
    probe = _probe_settings(rs)
    header = ["Path", "Connections/s: median [min–max]", "% of ceiling", "Errors", "Forwarder CPU, µs/connection"]
    rows = [[f"`{r.path}`" + (" (ceiling)" if s.ceiling is not None and r.path == s.ceiling.path else ""),
             fmt_range(r.conn_per_s, fmt_count), fmt_pct(r.pct_of_ceiling, 0), f"{r.errors}",
             fmt_us(r.cpu_us_per_conn.median) if r.cpu_us_per_conn.n else _no_cpu(r.path)]
            for r in s.rows]
    out = [f"Completed short connections per second (connect, 1-byte request, 1-byte reply, the server closes) "
           f"over {rs.header.config.seconds} s after {rs.header.config.omit_seconds} s of warm-up, "
           f"{probe['processes']} client processes x {probe['concurrency']} connections in flight."]
    if s.ceiling is not None:
        out.append(f"Ceiling (`{s.ceiling.path}`, no forwarder): {fmt_count(s.ceiling.conn_per_s.median)} "
                   "connections/s, what the client and the echo server reach while sharing this host's CPU.")
    return out + [_table(header, rows), *_notes_block(s.notes)]


def render_udp_section(rs: ResultSet, ctx: ReportContext) -> list[str]:
    s = summarise_udp(rs.records, rs.header.config.paths)
    size = rs.header.config.datagram_bytes
    header = ["Offered, Mbit/s", "Path", "Delivered, Mbit/s: median [min–max]", "% of offered",
              "Loss: median [min–max]", "Jitter, ms: median", "Forwarder CPU, s/GB"]
    rows = []
    for rate in s.rates_mbps:
        for p in s.paths:
            c = s.cell(p, rate)
            if c is None:
                continue
            if not c.delivered_mbps.n:
                rows.append([fmt_rate(rate), f"`{p}`", f"failed ({c.n_failed} run(s))", DASH, DASH, DASH, DASH])
                continue
            rows.append([fmt_rate(rate), f"`{p}`", fmt_range(c.delivered_mbps), fmt_pct(c.pct_of_offered),
                         fmt_range(c.loss_pct, lambda v: fmt_pct(v, 2)),
                         DASH if c.jitter_ms.median is None else f"{c.jitter_ms.median:.3f}",
                         fmt_cpu(c.cpu_s_per_gb) if c.cpu_s_per_gb.n else _no_cpu(p)])
    out = [f"`iperf3 -u` at each offered rate ({f'{size}-byte datagrams' if size else 'iperf3 default datagram size'}); "
           "delivered, loss and jitter are iperf3's receiver side. Every path forwards the UDP port and, on the "
           "same port, TCP for iperf3's control connection. `direct` shows what the host itself loses.",
           _table(header, rows, align_first_left=False)]
    failed = [r for r in rs.records if not r.ok]
    notes = list(s.notes) + sorted({f"{r.path}: {(r.error or '').splitlines()[0][:240]}" for r in failed})
    return out + _notes_block(notes)


SECTIONS: dict[str, SectionRenderer] = {
    "headline": render_headline_section,
    "ab": render_ab_section,
    "capped": render_capped_section,
    "sweep": render_sweep_section,
    "peers": render_peers_section,
    "latency": render_latency_section,
    "connrate": render_connrate_section,
    "udp": render_udp_section,
}


def _run_line(rs: ResultSet) -> str:
    h, cfg = rs.header, rs.header.config
    if h.kind == "latency":  # measured by the probe; `seconds` is its time limit
        how = f"{cfg.rounds} round(s), at most {cfg.seconds} s each, harness latency probe"
    elif h.kind == "connrate":
        how = (f"{cfg.rounds} round(s) of {cfg.seconds} s (+{cfg.omit_seconds} s warm-up), "
               "harness connection-rate probe")
    else:
        how = (f"{cfg.rounds} round(s) of {cfg.seconds} s (+{cfg.omit_seconds} s omitted), "
               f"iperf3 backend {cfg.backend}")
    return (f"`{rs.path.name}`: {len(rs.records)} measurement(s), {how}, "
            f"started {h.created_at}." + ("" if rs.complete else " **The run did not complete.**"))


def render_result_set(rs: ResultSet, ctx: ReportContext | None = None, host: Header | None = None,
                      level: int = 2) -> str:
    """One file's section: what ran, the tables and notes of its kind, and its plots.

    Its host block is shown unless it matches `host` (the report's, shown once at the top).
    """
    ctx = ctx if ctx is not None else ReportContext((rs,))
    h = rs.header
    out = [f"{'#' * level} {h.experiment} ({h.kind})"]
    if h.config.description:
        out.append(h.config.description.strip())
    out.append(_run_line(rs))
    out.append(f"Topology: {describe_topology(h.topology)}")
    if host is None or render_sysinfo(h) != render_sysinfo(host):
        if host is not None:
            out.append("Recorded on a different host or commit than the block at the top:")
        out.append(render_sysinfo(h))
    if h.unavailable_paths:
        out.append("Paths skipped (unavailable on this host):\n\n"
                   + "\n".join(f"- `{p}`: {why}" for p, why in h.unavailable_paths.items()))
    out += SECTIONS.get(h.kind, render_unknown_section)(rs, ctx)
    failed = [r for r in rs.records if not r.ok]
    if failed:
        out += _notes_block([f"{len(failed)} measurement(s) failed; first error: {failed[0].path} round "
                             f"{failed[0].round}: {(failed[0].error or '').splitlines()[0][:200]}"])
    out += ctx.plot_links(rs)
    return "\n\n".join(out) + "\n"


def _section_order(rs: ResultSet) -> tuple[int, str]:
    kinds = list(SECTIONS)
    kind = rs.header.kind
    return (kinds.index(kind) if kind in kinds else len(kinds), rs.path.name)


def ordered(result_sets: Iterable[ResultSet]) -> list[ResultSet]:
    """Result files in report order: by kind (SECTIONS order), then file name."""
    return sorted(result_sets, key=_section_order)


def report_host(result_sets: Sequence[ResultSet]) -> Header | None:
    """The header whose host block heads the report: the earliest file's."""
    return min((rs.header for rs in result_sets), key=lambda h: h.created_at, default=None)


def _sections(result_sets: Sequence[ResultSet], plots: Mapping[str, Sequence[str]], level: int) -> list[str]:
    ctx = ReportContext(tuple(result_sets), plots)
    host = report_host(result_sets)
    out = []
    if host is not None:
        si = host.sysinfo
        out += [f"{'#' * level} Host", f"`{si.hostname}`, {si.cpu_cores} cores, "
                f"{(si.memory_kib or 0) / 2**20:.1f} GiB RAM.", render_sysinfo(host)]
    out += [render_result_set(rs, ctx, host, level).rstrip("\n") for rs in ordered(result_sets)]
    comparison = summarise_topologies(result_sets)
    if comparison is not None:
        out += render_topology_section(comparison, level)
    return out


# ---------------------------------------------------------------- across topologies


def render_topology_table(c: TopologyComparison) -> str:
    """Per path: median [min–max] on each topology, second / first, % of iptables within each."""
    first, second = c.labels[0], c.labels[1]
    header = ["Path"] + [f"{lab}, Mbit/s" for lab in c.labels] + [f"{second} ÷ {first}"] + [
        f"% of iptables ({lab})" for lab in c.labels]
    rows = []
    for r in c.rows:
        rows.append([f"`{r.path}`"] + [fmt_range(r.throughput_mbps[lab]) for lab in c.labels]
                    + [fmt_pct(r.vs_first_pct, 0)] + [fmt_pct(r.pct_of_baseline[lab], 0) for lab in c.labels])
    return _table(header, rows)


# What changes between loopback and the namespace topology, mechanically (the numbers above say how much).
NETNS_DIFFERENCES = (
    "Packets cross two veth pairs and the edge namespace's IP stack (routing, conntrack) instead of one "
    "loopback device; segments are cut to the veth MTU (1500 unless the topology sets one) where loopback "
    "carries 65536-byte frames, so there are many more packets per byte (GSO/GRO sizes are in each file's "
    "header, `topology.applied`).",
    "The kernel baselines change mechanism: loopback uses REDIRECT (iptables) / DNAT (nftables) in the nat "
    "OUTPUT hook; netns uses DNAT in the edge's PREROUTING with forwarding and MASQUERADE towards the target, "
    "which is what a port-forwarding box runs. `nft_flowtable` exists only there.",
    "`direct` on netns is routed through the edge (ip_forward, no NAT, no forwarder), so it measures the "
    "crossing, not a same-host socket pair.",
    "Namespaces separate network stacks, not CPUs: the iperf3 ends and the forwarder still share this "
    "host's cores, so CPU contention shapes both topologies alike.",
)


def render_topology_section(c: TopologyComparison, level: int = 2) -> list[str]:
    """The side-by-side table and the 'what differs' notes (a template the numbers fill in)."""
    files = "; ".join(f"{lab}: {', '.join(f'`{f}`' for f in fs)}" for lab, fs in c.files.items())
    out = [f"{'#' * level} Across topologies: {' vs '.join(c.labels)}",
           f"The same paths measured on each topology (headline-style runs, uncapped; files: {files}). Compare "
           "the ratios within a topology first; the cross-topology column is a ratio of medians of separate runs.",
           render_topology_table(c)]
    found = []
    first, second = c.labels[0], c.labels[1]
    if c.ratio_median_pct is not None:
        found.append(f"Across the paths measured on both, {second} delivers a median {fmt_pct(c.ratio_median_pct, 0)} "
                     f"of what {first} does.")
    if c.largest_drop is not None and c.largest_drop.vs_first_pct is not None:
        found.append(f"Largest change: `{c.largest_drop.path}` at {fmt_pct(c.largest_drop.vs_first_pct, 0)} "
                     f"of its {first} throughput.")
    if c.rank_changes:
        found.append("Changes side of the iptables line (≥ 100% on one topology, < 100% on the other): "
                     + ", ".join(f"`{p}`" for p in c.rank_changes) + ".")
    if "netns" in " ".join(c.labels):
        out.append("What differs on netns:\n\n" + "\n".join(f"- {d}" for d in NETNS_DIFFERENCES))
    out += _notes_block(found)
    return out


def render_report(result_sets: Sequence[ResultSet], title: str = "Portunus benchmark results",
                  plots: Mapping[str, Sequence[str]] | None = None) -> str:
    """The whole report over every result file of a directory (plots: file name -> plot paths)."""
    out = [f"# {title}"]
    if not result_sets:
        out.append("No result files found.")
    else:
        out.append(HOW_TO_READ)
        out += _sections(result_sets, plots or {}, level=2)
    return "\n\n".join(out).rstrip() + "\n"


def render_readme_results(result_sets: Sequence[ResultSet], results_dir: str,
                          plots: Mapping[str, Sequence[str]] | None = None, level: int = 3) -> str:
    """The report's sections for the README; results_dir and plot paths relative to the README."""
    host = report_host(result_sets)
    if host is None:
        return f"No result files in `{results_dir}`.\n"
    commit = (host.sysinfo.commit or "?")[:12]
    files = ", ".join(f"`{rs.path.name}`" for rs in ordered(result_sets))
    out = [f"Generated from `{results_dir}` ({files}; commit {commit}, started {host.created_at}) by "
           f"`portunus-bench readme {results_dir} README.md`; the full report with every note is "
           f"[`{results_dir}/report.md`]({results_dir}/report.md).", HOW_TO_READ]
    out += _sections(result_sets, plots or {}, level)
    return "\n\n".join(out).rstrip() + "\n"
