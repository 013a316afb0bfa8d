"""Markdown rendering of loaded results: pure render_* functions, no I/O.

Tables follow the spec's layout (paths as columns for the headline). Other
stages (plots, gate, a richer report) build on the same summaries.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

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
from harness.experiments.headline import BASELINES
from harness.results import Header, ResultSet
from harness.stats import Summary

DASH = "–"
# What the CPU row says for paths with no forwarder process to measure.
NO_FORWARDER_CPU = {"direct": "none (no forwarder)", "iptables": "kernel (not attributable)"}


def fmt_mbps(v: float | None) -> str:
    """Mbit/s with as many digits as the magnitude deserves."""
    if v is None:
        return DASH
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:,.1f}"
    return f"{v:.3f}"


def fmt_pct(v: float | None, digits: int = 1) -> str:
    return DASH if v is None else f"{v:.{digits}f}%"


def fmt_range(s: Summary, fmt=fmt_mbps) -> str:
    """'median [min–max]', or the single value when n == 1."""
    if s.n == 0:
        return DASH
    if s.n == 1:
        return fmt(s.median)
    return f"{fmt(s.median)} [{fmt(s.min)}{DASH}{fmt(s.max)}]"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], align_first_left: bool = True) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join(("---" if i == 0 and align_first_left else "---:") for i in range(len(header))) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


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


def fmt_cpu(s: Summary) -> str:
    return DASH if s.median is None else f"{s.median:.3f}"


def render_ab_table(s: AbSummary) -> str:
    """The spec's pairs table: one row per round, then the medians."""
    header = ["Round", f"`{s.a}`", f"`{s.b}`", f"{s.a} / {s.b}"]
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
    """Delivered vs cap per (path, cap), with the spec's bound and the tighter goal."""
    header = ["Path", "Cap, B/s", "Target, Mbit/s", "Delivered, Mbit/s: median [min–max]", "Error",
              f"≤ +{s.bound_pct:g}%", f"within ±{s.goal_pct:g}%"]
    rows = []
    for r in s.rows:
        n = r.delivered_mbps.n
        rows.append([f"`{r.path}`", f"{r.cap_bytes_per_s:,}", fmt_mbps(r.target_mbps), fmt_range(r.delivered_mbps),
                     DASH if r.error_pct is None else f"{r.error_pct:+.2f}%",
                     f"{'yes' if r.within_bound else 'NO'} ({r.n_within_bound}/{n} runs)",
                     f"{'yes' if r.within_goal else 'no'} ({r.n_within_goal}/{n} runs)"])
    return _table(header, rows)


def render_sweep_table(s: SweepSummary) -> str:
    """Offered rate as rows, paths as columns, delivered median Mbit/s in the cells."""
    header = ["Offered, Mbit/s"] + [f"`{p}`" for p in s.paths]
    rows = []
    for rate in s.rates_mbps:
        cells = []
        for p in s.paths:
            c = s.cell(p, rate)
            cells.append(DASH if c is None else fmt_mbps(c.delivered_mbps.median))
        rows.append([fmt_mbps(rate)] + cells)
    return _table(header, rows, align_first_left=False)


def render_sysinfo(h: Header) -> str:
    """One compact block: where and from what these numbers came."""
    si = h.sysinfo
    commit = (si.get("commit") or "?")[:12] + (" (dirty)" if si.get("dirty") else "")
    sysctls = si.get("sysctls") or {}
    return "\n".join([
        "```text",
        f"commit {commit}; {si.get('distro')}; kernel {si.get('kernel')}",
        f"{si.get('cpu_model')} ({si.get('cpu_cores')} cores, governor {si.get('cpu_governor') or 'n/a'})",
        f"{si.get('iperf3')}; {si.get('iptables')}; Python {si.get('python')}",
        "sysctls: " + ", ".join(f"{k}={v}" for k, v in sysctls.items()),
        "```",
    ])


def render_result_set(rs: ResultSet) -> str:
    """One section per result file: what ran, on what, the tables, and the caveats."""
    h = rs.header
    cfg = h.config
    out = [f"## {h.experiment} ({h.kind})", ""]
    if cfg.get("description"):
        out += [cfg["description"], ""]
    out += [f"`{rs.path.name}`: {len(rs.records)} measurement(s), {cfg.get('rounds')} round(s) of "
            f"{cfg.get('seconds')} s (+{cfg.get('omit_seconds')} s omitted), iperf3 backend {cfg.get('backend')}, "
            f"started {h.created_at}." + ("" if rs.complete else " **The run did not complete.**"), ""]
    out += [render_sysinfo(h), ""]
    if h.unavailable_paths:
        out += ["Paths skipped (unavailable on this host):", ""]
        out += [f"- `{p}`: {why}" for p, why in h.unavailable_paths.items()] + [""]
    records = rs.records
    notes: list[str] = []
    if h.kind == "ab":
        a, b = (cfg.get("pair") or cfg["paths"][:2])
        out += [render_ab_table(summarise_ab(records, a, b)), ""]
    else:
        if any(r.cap_bytes_per_s is None and r.offered_mbps is None for r in records):
            hs = summarise_headline(records, cfg.get("paths", ()))
            out += ["Throughput is iperf3's sender-side rate over the non-omitted seconds, the same for every path.",
                    "", render_headline_table(hs), ""]
            notes += hs.notes
        if any(r.cap_bytes_per_s is not None for r in records):
            out += [render_capped_table(summarise_capped(records, cfg.get("cap_bound_pct", 10.0),
                                                         cfg.get("cap_goal_pct", 2.0))), ""]
        if any(r.offered_mbps is not None and r.cap_bytes_per_s is None for r in records):
            out += [render_sweep_table(summarise_sweep(records)), ""]
    failed = [r for r in records if not r.ok]
    if failed:
        notes.append(f"{len(failed)} measurement(s) failed; first error: {failed[0].path} round "
                     f"{failed[0].round}: {(failed[0].error or '').splitlines()[0][:200]}")
    if notes:
        out += ["Notes:", ""] + [f"- {n}" for n in notes] + [""]
    return "\n".join(out)


KIND_ORDER = ("headline", "ab", "capped", "sweep")


def _section_order(rs: ResultSet) -> tuple[int, str]:
    kind = rs.header.kind
    return (KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER), rs.path.name)


def render_report(result_sets: Sequence[ResultSet], title: str = "Portunus benchmark results") -> str:
    """The whole report over every result file of a directory."""
    out = [f"# {title}", ""]
    if not result_sets:
        out += ["No result files found.", ""]
    for rs in sorted(result_sets, key=_section_order):
        out.append(render_result_set(rs))
    return "\n".join(out).rstrip() + "\n"
