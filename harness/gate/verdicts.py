"""Microbenchmark verdicts: each benchmark of a run against the baseline's (see harness.gate)."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.records.bench_file import BenchFile, BenchResult
from harness.summarise.bench import RatioStats, shift_test, summarise_ratios

# Fewer measured rounds than this on either side and the file cannot be gated
# (a smoke run has one): with 3 or 4 rounds, one descheduled round moves the
# median by a whole round's worth, and the rank test's p-value is driven by a
# handful of orderings.
MIN_ROUNDS = 5
# Significance level of the one-sided Mann-Whitney U test: a slowdown beyond
# the threshold fails the gate only if p < ALPHA (1% false alarms from the
# test alone, before the threshold filters run-to-run shifts).
SIGNIFICANCE_ALPHA = 0.01
# Threshold for a benchmark the baseline gives none (a version-1 baseline, or
# a benchmark added since): the old flat rule.
DEFAULT_THRESHOLD_PCT = 50.0

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
    delta_pct: float | None = None  # current median ratio vs baseline's, + = slower / more CPU
    threshold_pct: float | None = None  # the regression threshold that applied
    beyond_threshold: bool | None = None
    p_slower: float | None = None  # one-sided Mann-Whitney U: current > baseline
    significant: bool | None = None  # p_slower < alpha
    note: str = ""


@dataclass(frozen=True)
class GateReport:
    default_threshold_pct: float  # for benchmarks the baseline gives no threshold
    alpha: float
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


def compare_bench(base: BenchResult, cur: BenchResult, threshold_pct: float,
                  alpha: float = SIGNIFICANCE_ALPHA) -> Comparison:
    """Verdict for one benchmark present in both files (see the module docstring)."""
    name = base.name
    b = summarise_ratios(base.ratios())
    c = summarise_ratios(cur.ratios())
    if cur.error:
        return Comparison(name, VERDICT_FAILED, b, note=f"current run failed: {cur.error}")
    if base.error:
        return Comparison(name, VERDICT_FAILED, None, c, note=f"baseline failed: {base.error}")
    if base.kind != cur.kind or dict(base.params) != dict(cur.params):
        diff = sorted(k for k in set(base.params) | set(cur.params) if base.params.get(k) != cur.params.get(k))
        if base.kind != cur.kind:
            diff.insert(0, "kind")
        detail = ", ".join(f"{k}: {_param(base, k)!r} -> {_param(cur, k)!r}" for k in diff)
        return Comparison(name, VERDICT_INCOMPATIBLE, b, c, note=f"parameters differ ({detail}): refresh the "
                          "baseline (make baseline)")
    for label, s in (("baseline", b), ("current", c)):
        if s is None or s.n < MIN_ROUNDS:
            n = 0 if s is None else s.n
            return Comparison(name, VERDICT_INCOMPATIBLE, b, c,
                              note=f"{label} has {n} measured round(s), the gate needs >= {MIN_ROUNDS}")
    assert b is not None and c is not None
    delta = 100.0 * (c.median / b.median - 1.0)
    beyond = delta > threshold_pct
    test = shift_test(base.ratios(), cur.ratios())
    significant = test.p_slower < alpha
    common = dict(delta_pct=delta, threshold_pct=threshold_pct, beyond_threshold=beyond, p_slower=test.p_slower,
                  significant=significant)
    if beyond and significant:
        return Comparison(name, VERDICT_REGRESSION, b, c, **common,  # type: ignore[arg-type]
                          note=f"median +{delta:.0f}% > {threshold_pct:g}% and significant "
                          f"(Mann-Whitney p = {test.p_slower:.2g} < {alpha:g})")
    if beyond:
        return Comparison(name, VERDICT_NOISE, b, c, **common,  # type: ignore[arg-type]
                          note=f"+{delta:.0f}% > {threshold_pct:g}%, but not significant "
                          f"(p = {test.p_slower:.2g} >= {alpha:g}): within the rounds' spread")
    if c.median * (1.0 + threshold_pct / 100.0) < b.median and test.p_faster < alpha:
        # The mirror image of a regression: as much faster as a regression is slower.
        return Comparison(name, VERDICT_IMPROVED, b, c, **common,  # type: ignore[arg-type]
                          note=f"{delta:.0f}%, significant (p = {test.p_faster:.2g})")
    note = "slower, within threshold" if (delta > 0 and significant) else ""
    return Comparison(name, VERDICT_OK, b, c, **common, note=note)  # type: ignore[arg-type]


def _param(b: BenchResult, key: str) -> object:
    return b.kind if key == "kind" else b.params.get(key)


def threshold_for(baseline: BenchFile, name: str, default_pct: float) -> float:
    """The baseline's threshold for a benchmark, or the default (a baseline without one)."""
    t = baseline.thresholds.get(name)
    return t.max_regression_pct if t is not None else default_pct


def compare(baseline: BenchFile, current: BenchFile, default_threshold_pct: float = DEFAULT_THRESHOLD_PCT,
            alpha: float = SIGNIFICANCE_ALPHA) -> GateReport:
    """Compare every baseline benchmark with the current run; benchmarks only in the
    current run are listed as `new` (not gated until the baseline is refreshed)."""
    if default_threshold_pct < 0:
        raise ValueError(f"default_threshold_pct must be >= 0, got {default_threshold_pct}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be between 0 and 1, got {alpha}")
    rows = []
    for base in baseline.benchmarks:
        cur = current.get(base.name)
        if cur is None:
            rows.append(Comparison(base.name, VERDICT_MISSING, summarise_ratios(base.ratios()),
                                   note="in the baseline, not in the current run"))
        else:
            rows.append(compare_bench(base, cur, threshold_for(baseline, base.name, default_threshold_pct), alpha))
    for cur in current.benchmarks:
        if baseline.get(cur.name) is None:
            rows.append(Comparison(cur.name, VERDICT_NEW, current=summarise_ratios(cur.ratios()),
                                   note="no baseline yet (make baseline)"))
    return GateReport(default_threshold_pct, alpha, tuple(rows), tuple(_host_notes(baseline, current)))


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
