"""Regression gate: data-plane microbenchmark files, their comparison, and the quick run's floors.

Two checks, one verdict each, pure functions (no I/O below `load_*`):

* **Microbenchmarks** (`benchmarks/microbench/`): every benchmark measures the
  same operation through the proxy and directly (no proxy), interleaved
  round by round, and the gate compares the per-round *ratio* proxy / direct
  (seconds per operation), never absolute times: the ratio cancels most of
  what a noisy host does to both. `compare` marks a benchmark a REGRESSION
  only if BOTH hold (asv's rule: a ratio beyond the threshold and a
  significant difference):
    - beyond threshold: the current median ratio is more than
      `max_regression_pct` above the baseline's median ratio;
    - outside spread: the current run's interquartile range of ratios lies
      entirely above the baseline's (the two runs' middle halves do not
      overlap, so run-to-run noise cannot explain the difference).
  Beyond the threshold but inside the spread is `noise`; `improved` is the
  mirror image (median ratio below baseline / (1 + threshold), IQRs apart);
  improvements never fail. Exit code: 1 if any regression; else 2 if any benchmark is missing,
  failed, has too few rounds or other parameters than its baseline; else 0.
* **Floors** (`configs/quick.yaml` through `portunus-bench run`): a path's
  median throughput as % of another's (e.g. standalone vs iptables) must not
  fall below a committed floor. Exit 1 below a floor, 2 if a path is missing.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError
from harness.records.results import Record

BENCH_FORMAT = "portunus-microbench"
# Format history of microbenchmark files (BENCH_SCHEMA_VERSION):
#   1: first version: {schema_version, format, created_at, sysinfo, settings, host_load,
#      benchmarks: [{name, description, kind, params, rounds: [{direct_s,
#      proxy_s, ops, warmup}], error}]}. Times are seconds for `ops` operations.
# Loaders refuse newer versions; an older one gets an entry in BENCH_UPGRADES.
BENCH_SCHEMA_VERSION = 1
BENCH_UPGRADES: dict[int, Any] = {}  # version -> function(doc) -> doc of version + 1

FLOORS_FORMAT = "portunus-floors"
# Format history of floor files (FLOORS_SCHEMA_VERSION):
#   1: first version: {schema_version, format, floors: [{path, vs, min_pct, why}], evidence}.
FLOORS_SCHEMA_VERSION = 1

# Fewer rounds than this and an interquartile range says nothing about
# run-to-run spread; such a file cannot be gated (it is a smoke run).
MIN_ROUNDS = 5

# Benchmark kinds, and how their seconds per operation read for a person.
KINDS = ("throughput", "latency", "rate")

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


class GateDataError(HarnessError):
    """A gate input cannot be used: unreadable, not the expected format, or a newer version."""


# ---------------------------------------------------------------- file model


@dataclass(frozen=True)
class Round:
    """One round: `ops` operations directly, then (or before) the same through the proxy."""

    direct_s: float
    proxy_s: float
    ops: int
    warmup: bool = False

    @property
    def ratio(self) -> float:
        return self.proxy_s / self.direct_s


@dataclass(frozen=True)
class BenchResult:
    """One benchmark of a run: its parameters and every round (warm-ups kept, flagged)."""

    name: str
    description: str
    kind: str  # one of KINDS
    params: Mapping[str, Any]
    rounds: tuple[Round, ...]
    error: str | None = None

    @property
    def measured(self) -> tuple[Round, ...]:
        """Rounds that count (warm-ups excluded)."""
        return tuple(r for r in self.rounds if not r.warmup)

    def ratios(self) -> list[float]:
        return [r.ratio for r in self.measured]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "kind": self.kind,
                "params": dict(self.params), "error": self.error,
                "rounds": [{"direct_s": r.direct_s, "proxy_s": r.proxy_s, "ops": r.ops, "warmup": r.warmup}
                           for r in self.rounds]}


@dataclass(frozen=True)
class BenchFile:
    """A microbenchmark run: host metadata once, then one BenchResult per benchmark."""

    created_at: str
    sysinfo: Mapping[str, Any]
    settings: Mapping[str, Any]
    benchmarks: tuple[BenchResult, ...]
    host_load: Mapping[str, Any] = field(default_factory=dict)  # load average at start and end
    schema_version: int = BENCH_SCHEMA_VERSION

    def get(self, name: str) -> BenchResult | None:
        return next((b for b in self.benchmarks if b.name == name), None)


def dump_bench_file(bf: BenchFile) -> dict[str, Any]:
    """The JSON document of a BenchFile (written by the benchmark session)."""
    return {"schema_version": BENCH_SCHEMA_VERSION, "format": BENCH_FORMAT, "created_at": bf.created_at,
            "sysinfo": dict(bf.sysinfo), "settings": dict(bf.settings), "host_load": dict(bf.host_load),
            "benchmarks": [b.to_dict() for b in bf.benchmarks]}


def _require(cond: bool, source: str, what: str) -> None:
    if not cond:
        raise GateDataError(f"{source}: {what}")


def _parse_round(obj: Any, source: str) -> Round:
    _require(isinstance(obj, dict), source, "a round must be an object")
    try:
        r = Round(float(obj["direct_s"]), float(obj["proxy_s"]), int(obj["ops"]), bool(obj.get("warmup", False)))
    except (KeyError, TypeError, ValueError) as e:
        raise GateDataError(f"{source}: bad round {obj!r}: {e}") from None
    _require(r.direct_s > 0 and r.proxy_s > 0 and r.ops > 0 and math.isfinite(r.direct_s + r.proxy_s), source,
             f"round times and ops must be positive, got {obj!r}")
    return r


def parse_bench_file(doc: Any, source: str = "<bench file>") -> BenchFile:
    """A microbenchmark JSON document -> BenchFile.

    Raises:
        GateDataError: not a microbenchmark file, a newer schema, or a malformed entry.
    """
    _require(isinstance(doc, dict), source, "not a JSON object")
    fmt = doc.get("format")
    _require(fmt == BENCH_FORMAT, source, f"format is {fmt!r}, expected {BENCH_FORMAT!r} "
             "(a file written by the microbenchmarks: make bench / make baseline)")
    version = doc.get("schema_version")
    _require(isinstance(version, int) and version >= 1, source, f"bad schema_version {version!r}")
    if version > BENCH_SCHEMA_VERSION:
        raise GateDataError(f"{source}: schema_version {version} is newer than this harness reads "
                            f"({BENCH_SCHEMA_VERSION}): update the harness (git pull && pip install -e .)")
    for v in range(version, BENCH_SCHEMA_VERSION):
        doc = BENCH_UPGRADES[v](doc)
    benches = doc.get("benchmarks")
    _require(isinstance(benches, list), source, "'benchmarks' must be a list")
    out = []
    for i, b in enumerate(benches):
        where = f"{source}: benchmarks[{i}]"
        _require(isinstance(b, dict) and isinstance(b.get("name"), str), where, "needs a 'name'")
        kind = b.get("kind")
        _require(kind in KINDS, where, f"kind must be one of {KINDS}, got {kind!r}")
        rounds = b.get("rounds", [])
        _require(isinstance(rounds, list), where, "'rounds' must be a list")
        out.append(BenchResult(name=b["name"], description=str(b.get("description", "")), kind=kind,
                               params=dict(b.get("params") or {}),
                               rounds=tuple(_parse_round(r, f"{where} ({b['name']})") for r in rounds),
                               error=b.get("error")))
    names = [b.name for b in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    _require(not dupes, source, f"duplicate benchmark names: {', '.join(dupes)}")
    return BenchFile(created_at=str(doc.get("created_at", "")), sysinfo=dict(doc.get("sysinfo") or {}),
                     settings=dict(doc.get("settings") or {}), benchmarks=tuple(out),
                     host_load=dict(doc.get("host_load") or {}))


def _load_json(path: str | Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise GateDataError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise GateDataError(f"{path}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise GateDataError(f"{path}: not JSON: {e}") from None


def load_bench_file(path: str | Path) -> BenchFile:
    """Read and parse a microbenchmark file (see parse_bench_file)."""
    return parse_bench_file(_load_json(path), str(path))


def pool_bench_files(files: Sequence[BenchFile]) -> BenchFile:
    """One baseline from several runs: each benchmark's rounds of every run, in run order.

    A baseline pooled over separate runs (fresh processes, connections, CPU
    placement) has an interquartile range that shows run-to-run spread, not
    only the spread within one run; that is the spread the gate tests against.

    Raises:
        GateDataError: the runs measured different benchmarks, parameters or settings.
    """
    if not files:
        raise GateDataError("nothing to pool")
    first = files[0]
    names = [b.name for b in first.benchmarks]
    for i, f in enumerate(files[1:], start=2):
        if [b.name for b in f.benchmarks] != names:
            raise GateDataError(f"run {i} measured other benchmarks than run 1: "
                                f"{[b.name for b in f.benchmarks]} vs {names}")
        if dict(f.settings) != dict(first.settings):
            raise GateDataError(f"run {i} has other settings than run 1: {dict(f.settings)} vs {dict(first.settings)}")
    pooled = []
    for b in first.benchmarks:
        mine = [f.get(b.name) for f in files]
        for i, m in enumerate(mine, start=1):
            assert m is not None
            if dict(m.params) != dict(b.params):
                raise GateDataError(f"{b.name}: run {i} has parameters {dict(m.params)}, run 1 {dict(b.params)}")
        errors = [m.error for m in mine if m is not None and m.error]
        pooled.append(BenchResult(b.name, b.description, b.kind, dict(b.params),
                                  tuple(r for m in mine if m is not None for r in m.rounds),
                                  "; ".join(errors) if errors else None))
    return BenchFile(created_at=files[-1].created_at, sysinfo=dict(first.sysinfo),
                     settings={**first.settings, "pooled_runs": len(files)}, benchmarks=tuple(pooled),
                     host_load={"runs": [dict(f.host_load) for f in files]})


# ---------------------------------------------------------------- statistics


@dataclass(frozen=True)
class RatioStats:
    """n, median, interquartile range and min-max of per-round ratios."""

    n: int
    median: float
    q1: float
    q3: float
    min: float
    max: float


def summarise_ratios(values: Iterable[float]) -> RatioStats | None:
    """Median, quartiles (inclusive method: within the data) and range; None if empty."""
    vs = sorted(values)
    if not vs:
        return None
    if len(vs) == 1:
        q1 = q3 = vs[0]
    else:
        q1, _, q3 = statistics.quantiles(vs, n=4, method="inclusive")
    return RatioStats(len(vs), statistics.median(vs), q1, q3, vs[0], vs[-1])


def natural_value(bench: BenchResult, s_per_op: float) -> tuple[float, str]:
    """Seconds per operation in the unit a person reads for this kind of benchmark."""
    if bench.kind == "throughput":
        payload = float(bench.params.get("payload_bytes", 0))
        return payload / s_per_op / (1 << 20), "MiB/s"
    if bench.kind == "rate":
        return 1.0 / s_per_op, "ops/s"
    return s_per_op * 1e6, "us"


@dataclass(frozen=True)
class BenchSummary:
    """What one benchmark measured: ratio statistics and both sides' medians in natural units."""

    name: str
    ratio: RatioStats | None
    proxy_value: float | None
    direct_value: float | None
    unit: str


def summarise_bench(bench: BenchResult) -> BenchSummary:
    """Ratio statistics plus median proxy and direct throughput / latency / rate."""
    rounds = bench.measured
    if not rounds:
        return BenchSummary(bench.name, None, None, None, natural_value(bench, 1.0)[1])
    proxy = statistics.median(r.proxy_s / r.ops for r in rounds)
    direct = statistics.median(r.direct_s / r.ops for r in rounds)
    pv, unit = natural_value(bench, proxy)
    dv, _ = natural_value(bench, direct)
    return BenchSummary(bench.name, summarise_ratios(bench.ratios()), pv, dv, unit)


# ---------------------------------------------------------------- comparison


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


# ---------------------------------------------------------------- floors


@dataclass(frozen=True)
class Floor:
    """`path`'s median throughput must be at least `min_pct` % of `vs`'s."""

    path: str
    vs: str
    min_pct: float
    why: str = ""


def parse_floors(doc: Any, source: str = "<floors file>") -> tuple[Floor, ...]:
    """A floors JSON document -> Floors (GateDataError if malformed or newer)."""
    _require(isinstance(doc, dict), source, "not a JSON object")
    _require(doc.get("format") == FLOORS_FORMAT, source,
             f"format is {doc.get('format')!r}, expected {FLOORS_FORMAT!r}")
    version = doc.get("schema_version")
    _require(isinstance(version, int) and version >= 1, source, f"bad schema_version {version!r}")
    if version > FLOORS_SCHEMA_VERSION:
        raise GateDataError(f"{source}: schema_version {version} is newer than this harness reads "
                            f"({FLOORS_SCHEMA_VERSION}): update the harness")
    floors = doc.get("floors")
    _require(isinstance(floors, list) and floors, source, "'floors' must be a non-empty list")
    out = []
    for i, f in enumerate(floors):
        try:
            fl = Floor(str(f["path"]), str(f["vs"]), float(f["min_pct"]), str(f.get("why", "")))
        except (KeyError, TypeError, ValueError) as e:
            raise GateDataError(f"{source}: floors[{i}]: {e!r}") from None
        _require(fl.min_pct > 0, source, f"floors[{i}]: min_pct must be > 0")
        out.append(fl)
    return tuple(out)


def load_floors(path: str | Path) -> tuple[Floor, ...]:
    return parse_floors(_load_json(path), str(path))


@dataclass(frozen=True)
class FloorCheck:
    floor: Floor
    verdict: str  # ok | BELOW FLOOR | missing
    value_pct: float | None = None
    n: int = 0
    note: str = ""


VERDICT_BELOW_FLOOR = "BELOW FLOOR"


def check_floors(floors: Sequence[Floor], records: Iterable[Record]) -> tuple[FloorCheck, ...]:
    """Each floor against the uncapped records of a headline-kind run (median vs median)."""
    from harness.experiments.headline import summarise_headline

    summary = summarise_headline(records)
    out = []
    for fl in floors:
        p, v = summary.get(fl.path), summary.get(fl.vs)
        missing = [name for name, res in ((fl.path, p), (fl.vs, v)) if res is None or res.throughput_mbps.n == 0]
        if missing:
            out.append(FloorCheck(fl, VERDICT_MISSING, note=f"no successful measurement of {', '.join(missing)}"))
            continue
        assert p is not None and v is not None
        pm, vm = p.throughput_mbps.median, v.throughput_mbps.median
        assert pm is not None and vm is not None
        pct = 100.0 * pm / vm if vm else 0.0
        n = min(p.throughput_mbps.n, v.throughput_mbps.n)
        verdict = VERDICT_OK if pct >= fl.min_pct else VERDICT_BELOW_FLOOR
        out.append(FloorCheck(fl, verdict, pct, n, f"{pm:.0f} / {vm:.0f} Mbit/s"))
    return tuple(out)


def floors_exit_code(checks: Sequence[FloorCheck]) -> int:
    if any(c.verdict == VERDICT_BELOW_FLOOR for c in checks):
        return EXIT_REGRESSION
    if any(c.verdict == VERDICT_MISSING for c in checks):
        return EXIT_DATA
    return EXIT_OK


# ---------------------------------------------------------------- rendering


def _fmt_ratio(s: RatioStats | None) -> str:
    if s is None:
        return "-"
    return f"{s.median:.2f}x [{s.q1:.2f}-{s.q3:.2f}]"


def _yn(v: bool | None) -> str:
    return "-" if v is None else ("yes" if v else "no")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) if rows else len(header[i])
              for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *(line(r) for r in rows)]


def render_gate(report: GateReport) -> str:
    """The gate table: benchmark, baseline, current, delta, both conditions, verdict; then notes."""
    header = ["benchmark", "baseline proxy/direct", "current proxy/direct", "delta",
              f"> {report.max_regression_pct:g}%", "outside IQR", "verdict"]
    rows = []
    for r in report.rows:
        delta = "-" if r.delta_pct is None else f"{r.delta_pct:+.1f}%"
        rows.append([r.name, _fmt_ratio(r.baseline), _fmt_ratio(r.current), delta,
                     _yn(r.beyond_threshold), _yn(r.outside_spread), r.verdict])
    lines = ["Microbenchmark gate: time per operation through the proxy / direct, median [IQR] of rounds",
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
    """What a microbenchmark run measured: both sides in natural units and the ratio spread."""
    header = ["benchmark", "proxy", "direct", "proxy/direct time", "min-max", "n"]
    rows = []
    for b in bf.benchmarks:
        s = summarise_bench(b)
        if b.error or s.ratio is None:
            rows.append([b.name, "-", "-", "-", "-", "0" if not b.error else f"failed: {b.error}"])
            continue
        rows.append([b.name, f"{s.proxy_value:,.1f} {s.unit}", f"{s.direct_value:,.1f} {s.unit}",
                     _fmt_ratio(s.ratio), f"{s.ratio.min:.2f}-{s.ratio.max:.2f}", str(s.ratio.n)])
    return "\n".join(_table(header, rows)) + "\n"


def render_floors(checks: Sequence[FloorCheck]) -> str:
    """The floor table: path vs other path, measured %, floor, verdict."""
    header = ["path", "vs", "measured", "floor", "n", "verdict"]
    rows = [[c.floor.path, c.floor.vs, "-" if c.value_pct is None else f"{c.value_pct:.0f}%",
             f">= {c.floor.min_pct:g}%", str(c.n), c.verdict] for c in checks]
    lines = ["Quick-run floors: median throughput of path as % of vs", *_table(header, rows), ""]
    lines += [f"- {c.floor.path} vs {c.floor.vs}: {c.note}" for c in checks if c.note]
    lines.append(f"result: exit {floors_exit_code(checks)}")
    return "\n".join(lines) + "\n"
