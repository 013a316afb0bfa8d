"""Microbenchmark verdicts: each benchmark of a run against the baseline's (see harness.gate)."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.records.bench_file import BenchFile, BenchResult
from harness.summarise.bench import RatioStats, summarise_ratios

# Fewer rounds than this and an interquartile range says nothing about
# run-to-run spread; such a file cannot be gated (it is a smoke run).
MIN_ROUNDS = 5

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_DATA = 2

VERDICT_OK = "ok"
VERDICT_IMPROVED = "improved"
VERDICT_NOISE = "noise"
VERDICT_REGRESSION = "REGRESSION"
VERDICT_MISSING = "missing"
VERDICT_FAILED = "failed"
VERDICT_INCOMPATIBLE = "incompatible"
VERDICT_NEW = "new"
DATA_VERDICTS = frozenset({VERDICT_MISSING, VERDICT_FAILED, VERDICT_INCOMPATIBLE})


@dataclass(frozen=True)
class Comparison:
    """The gate's verdict on one benchmark, and why."""

    name: str
    verdict: str
    baseline: RatioStats | None = None
    current: RatioStats | None = None
    delta_pct: float | None = None  # current median ratio vs baseline's, + = slower through the proxy
    beyond_threshold: bool | None = None
    outside_spread: bool | None = None
    note: str = ""


@dataclass(frozen=True)
class GateReport:
    max_regression_pct: float
    rows: tuple[Comparison, ...]
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def regressions(self) -> tuple[Comparison, ...]:
        return tuple(r for r in self.rows if r.verdict == VERDICT_REGRESSION)

    @property
    def exit_code(self) -> int:
        """1 if anything regressed (a finding stands even if other rows lack data), else 2 on
        missing / failed / incompatible data, else 0."""
        if self.regressions:
            return EXIT_REGRESSION
        if any(r.verdict in DATA_VERDICTS for r in self.rows):
            return EXIT_DATA
        return EXIT_OK


def compare_bench(base: BenchResult, cur: BenchResult, max_regression_pct: float) -> Comparison:
    """Verdict for one benchmark present in both files (see the module docstring)."""
    name = base.name
    b = summarise_ratios(base.ratios())
    c = summarise_ratios(cur.ratios())
    if cur.error:
        return Comparison(name, VERDICT_FAILED, b, note=f"current run failed: {cur.error}")
    if base.error:
        return Comparison(name, VERDICT_FAILED, None, c, note=f"baseline failed: {base.error}")
    if dict(base.params) != dict(cur.params):
        diff = sorted(k for k in set(base.params) | set(cur.params) if base.params.get(k) != cur.params.get(k))
        detail = ", ".join(f"{k}: {base.params.get(k)!r} -> {cur.params.get(k)!r}" for k in diff)
        return Comparison(name, VERDICT_INCOMPATIBLE, b, c, note=f"parameters differ ({detail}): refresh the "
                          "baseline (make baseline)")
    for label, s in (("baseline", b), ("current", c)):
        if s is None or s.n < MIN_ROUNDS:
            n = 0 if s is None else s.n
            return Comparison(name, VERDICT_INCOMPATIBLE, b, c,
                              note=f"{label} has {n} measured round(s), the gate needs >= {MIN_ROUNDS}")
    assert b is not None and c is not None
    delta = 100.0 * (c.median / b.median - 1.0)
    beyond = delta > max_regression_pct
    outside = c.q1 > b.q3
    if beyond and outside:
        verdict = VERDICT_REGRESSION
        note = f"median ratio +{delta:.0f}% > {max_regression_pct:g}% and IQRs do not overlap"
    elif beyond:
        verdict = VERDICT_NOISE
        note = f"+{delta:.0f}% > {max_regression_pct:g}%, but the IQRs overlap: within run-to-run spread"
    elif c.median * (1.0 + max_regression_pct / 100.0) < b.median and c.q3 < b.q1:
        # The mirror image of a regression: as much faster as a regression is slower.
        verdict = VERDICT_IMPROVED
        note = f"{delta:.0f}%, IQRs do not overlap"
    else:
        verdict = VERDICT_OK
        note = "slower, within threshold" if (delta > 0 and outside) else ""
    return Comparison(name, verdict, b, c, delta, beyond, outside, note)


def compare(baseline: BenchFile, current: BenchFile, max_regression_pct: float) -> GateReport:
    """Compare every baseline benchmark with the current run; benchmarks only in the
    current run are listed as `new` (not gated until the baseline is refreshed)."""
    if max_regression_pct < 0:
        raise ValueError(f"max_regression_pct must be >= 0, got {max_regression_pct}")
    rows = []
    for base in baseline.benchmarks:
        cur = current.get(base.name)
        if cur is None:
            rows.append(Comparison(base.name, VERDICT_MISSING, summarise_ratios(base.ratios()),
                                   note="in the baseline, not in the current run"))
        else:
            rows.append(compare_bench(base, cur, max_regression_pct))
    for cur in current.benchmarks:
        if baseline.get(cur.name) is None:
            rows.append(Comparison(cur.name, VERDICT_NEW, current=summarise_ratios(cur.ratios()),
                                   note="no baseline yet (make baseline)"))
    return GateReport(max_regression_pct, tuple(rows), tuple(_host_notes(baseline, current)))


def _host_notes(baseline: BenchFile, current: BenchFile) -> list[str]:
    notes = []
    for key in ("hostname", "cpu_model", "cpu_cores", "kernel", "python"):
        b, c = baseline.sysinfo.get(key), current.sysinfo.get(key)
        if b != c:
            notes.append(f"{key} differs: baseline {b!r}, current {c!r} (ratios travel better than "
                         "absolute times, but a baseline from this host is the fair one)")
    for key in sorted((set(baseline.settings) | set(current.settings)) - {"pooled_runs"}):
        b, c = baseline.settings.get(key), current.settings.get(key)
        if b != c:
            notes.append(f"setting {key}: baseline {b!r}, current {c!r}")
    return notes
