"""The gate's text tables: verdicts, what a microbenchmark run measured, the floors (pure text)."""

from __future__ import annotations

from collections.abc import Sequence

from harness.gate.floors import FloorCheck, floors_exit_code
from harness.gate.verdicts import GateReport
from harness.records.bench_file import BenchFile
from harness.summarise.bench import RatioStats, summarise_bench


def _fmt_ratio(s: RatioStats | None) -> str:
    if s is None:
        return "-"
    return f"{s.median:.2f}x [{s.q1:.2f}-{s.q3:.2f}]"


def _yn(v: bool | None) -> str:
    return "-" if v is None else ("yes" if v else "no")


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return f"{p:.1e}" if p < 0.001 else f"{p:.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i])
              for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in rows)]


def render_gate(report: GateReport) -> str:
    """The gate table: benchmark, baseline, current, delta, threshold, test, verdict; then notes."""
    header = ["benchmark", "baseline ratio", "current ratio", "delta", "threshold", "> threshold",
              "p (slower)", f"p < {report.alpha:g}", "verdict"]
    rows = []
    for r in report.rows:
        delta = "-" if r.delta_pct is None else f"{r.delta_pct:+.1f}%"
        thr = "-" if r.threshold_pct is None else f"{r.threshold_pct:g}%"
        rows.append([r.name, _fmt_ratio(r.baseline), _fmt_ratio(r.current), delta, thr,
                     _yn(r.beyond_threshold), _fmt_p(r.p_slower), _yn(r.significant), r.verdict])
    lines = ["Microbenchmark gate: per-round ratio, median [IQR] (timing: proxy/direct time per operation; "
             "cost: forwarder CPU / client CPU for the same work); REGRESSION = beyond the threshold AND "
             "significantly slower (one-sided Mann-Whitney U)",
             *_table(header, rows), ""]
    for r in report.rows:
        if r.note:
            lines.append(f"- {r.name}: {r.verdict}: {r.note}")
    for n in report.notes:
        lines.append(f"- note: {n}")
    counts = {v: sum(1 for r in report.rows if r.verdict == v) for v in dict.fromkeys(r.verdict for r in report.rows)}
    summary = ", ".join(f"{n} {v}" for v, n in counts.items())
    lines.append(f"result: {summary or 'nothing compared'} -> exit {report.exit_code}")
    return "\n".join(lines) + "\n"


def render_bench_summary(bf: BenchFile) -> str:
    """What a microbenchmark run measured: both sides in natural units and the ratio spread
    (timing: proxy and direct; cost: forwarder and client CPU per unit of work)."""
    header = ["benchmark", "proxy or forwarder CPU", "direct or client CPU", "ratio", "min-max", "n"]
    rows = []
    for b in bf.benchmarks:
        s = summarise_bench(b)
        if b.error or s.ratio is None:
            rows.append([b.name, "-", "-", "-", "-", "0" if not b.error else f"failed: {b.error}"])
            continue
        assert s.proxy_value is not None and s.direct_value is not None
        rows.append([b.name, _fmt_value(s.proxy_value, s.unit), _fmt_value(s.direct_value, s.unit),
                     _fmt_ratio(s.ratio), f"{s.ratio.min:.2f}-{s.ratio.max:.2f}", str(s.ratio.n)])
    return "\n".join(_table(header, rows)) + "\n"


def _fmt_value(v: float, unit: str) -> str:
    return f"{v:,.3f} {unit}" if unit == "s/GB" else f"{v:,.1f} {unit}"


def render_thresholds(bf: BenchFile) -> str:
    """A baseline's thresholds: per benchmark the runs' median ratios, their spread, the threshold."""
    header = ["benchmark", "run medians", "spread", "threshold", "rule"]
    rows = [[name, " ".join(f"{m:.3f}" for m in t.run_medians), f"{t.spread_pct:.1f}%",
             f"{t.max_regression_pct:g}%", t.rule] for name, t in bf.thresholds.items()]
    return "\n".join(["Thresholds (from the spread between the pooled runs):", *_table(header, rows)]) + "\n"


def render_floors(checks: Sequence[FloorCheck]) -> str:
    """The floor table: path vs other path, measured %, floor, verdict."""
    header = ["path", "vs", "measured", "floor", "n", "verdict"]
    rows = [[c.floor.path, c.floor.vs, "-" if c.value_pct is None else f"{c.value_pct:.0f}%",
             f">= {c.floor.min_pct:g}%", str(c.n), c.verdict] for c in checks]
    lines = ["Quick-run floors: median throughput of path as % of vs", *_table(header, rows), ""]
    lines += [f"- {c.floor.path} vs {c.floor.vs}: {c.note}" for c in checks if c.note]
    lines.append(f"result: exit {floors_exit_code(checks)}")
    return "\n".join(lines) + "\n"
