"""Microbenchmark files (benchmarks/microbench) and the gate's floor files: formats, loaders, pooling.

A microbenchmark file holds raw round measurements, so every statistic can be
recomputed. Every round is a pair measured at the same time, and the gate
reads the pair's ratio (harness.summarise.bench turns the rounds into ratio
statistics, harness.gate into verdicts):

* timing benchmarks (kinds throughput, latency, rate): the same operation
  through the proxy and directly (no proxy), interleaved; ratio = proxy
  time / direct time;
* cost benchmarks (kind cost): a fixed amount of work through the proxy;
  the forwarder process tree's CPU time and, over the same interval, the
  measuring client's CPU time for the same work; ratio = forwarder CPU /
  client CPU (the absolute cost per unit of work is kept and shown too).

A baseline is a file of this format pooled from several runs, plus the
gate's threshold per benchmark with the run-to-run spread it was derived
from (harness.gate.thresholds).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

BENCH_FORMAT = "portunus-microbench"
# Format history of microbenchmark files (BENCH_SCHEMA_VERSION):
#   1: first version: {schema_version, format, created_at, sysinfo, settings, host_load,
#      benchmarks: [{name, description, kind, params, rounds: [{direct_s,
#      proxy_s, ops, warmup}], error}]}. Times are seconds for `ops` operations.
#   2: kind "cost" (params.unit: GB | connection | datagram), whose rounds are
#      {forwarder_cpu_s, client_cpu_s, units, wall_s, warmup}; a baseline's
#      `thresholds` {benchmark: {max_regression_pct, spread_pct, run_medians, rule}}
#      (the gate's per-benchmark threshold and the evidence for it). A version-1
#      file has timing benchmarks only and no thresholds: it upgrades to
#      `thresholds: {}` (the gate then uses its --max-regression-pct for all).
# Loaders refuse newer versions; an older one is upgraded by BENCH_UPGRADES, step by step.
BENCH_SCHEMA_VERSION = 2


def _bench_upgrade_1_to_2(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "schema_version": 2, "thresholds": {}}


BENCH_UPGRADES: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _bench_upgrade_1_to_2}

FLOORS_FORMAT = "portunus-floors"
# Format history of floor files (FLOORS_SCHEMA_VERSION):
#   1: first version: {schema_version, format, floors: [{path, vs, min_pct, why}], evidence}.
FLOORS_SCHEMA_VERSION = 1

# Benchmark kinds: timing ones (how their seconds per operation read for a person) and cost.
TIMING_KINDS = ("throughput", "latency", "rate")
COST_KIND = "cost"
BENCH_KINDS = (*TIMING_KINDS, COST_KIND)
# Units of work of a cost benchmark (params.unit).
COST_UNITS = ("GB", "connection", "datagram")


class GateDataError(HarnessError):
    """A gate input cannot be used: unreadable, not the expected format, or a newer version."""


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
class CostRound:
    """One round of a cost benchmark: a fixed amount of work through the forwarder, and the CPU
    time the forwarder's process tree and the measuring client each used for it (same interval)."""

    forwarder_cpu_s: float
    client_cpu_s: float
    units: float  # work done, in the benchmark's unit (params.unit)
    wall_s: float
    warmup: bool = False

    @property
    def ratio(self) -> float:
        """Forwarder CPU / client CPU: what the gate compares (a busy host inflates both alike)."""
        return self.forwarder_cpu_s / self.client_cpu_s

    @property
    def forwarder_per_unit(self) -> float:
        return self.forwarder_cpu_s / self.units

    @property
    def client_per_unit(self) -> float:
        return self.client_cpu_s / self.units


AnyRound = Round | CostRound


def _round_dict(r: AnyRound) -> dict[str, Any]:
    if isinstance(r, CostRound):
        return {"forwarder_cpu_s": r.forwarder_cpu_s, "client_cpu_s": r.client_cpu_s, "units": r.units,
                "wall_s": r.wall_s, "warmup": r.warmup}
    return {"direct_s": r.direct_s, "proxy_s": r.proxy_s, "ops": r.ops, "warmup": r.warmup}


@dataclass(frozen=True)
class BenchResult:
    """One benchmark of a run: its parameters and every round (warm-ups kept, flagged)."""

    name: str
    description: str
    kind: str  # one of BENCH_KINDS
    params: Mapping[str, Any]
    rounds: tuple[AnyRound, ...]  # CostRound for kind "cost", else Round
    error: str | None = None

    @property
    def is_cost(self) -> bool:
        return self.kind == COST_KIND

    @property
    def measured(self) -> tuple[AnyRound, ...]:
        """Rounds that count (warm-ups excluded)."""
        return tuple(r for r in self.rounds if not r.warmup)

    def ratios(self) -> list[float]:
        """The gated value of every measured round (see the module docstring)."""
        return [r.ratio for r in self.measured]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "kind": self.kind,
                "params": dict(self.params), "error": self.error,
                "rounds": [_round_dict(r) for r in self.rounds]}


@dataclass(frozen=True)
class Threshold:
    """A baseline's regression threshold for one benchmark, and the run-to-run spread behind it."""

    max_regression_pct: float
    spread_pct: float  # (max - min) of the runs' median ratios, % of the pooled median
    run_medians: tuple[float, ...]  # each pooled run's median ratio
    rule: str = ""  # how max_regression_pct follows from spread_pct

    def to_dict(self) -> dict[str, Any]:
        return {"max_regression_pct": self.max_regression_pct, "spread_pct": self.spread_pct,
                "run_medians": list(self.run_medians), "rule": self.rule}


@dataclass(frozen=True)
class BenchFile:
    """A microbenchmark run: host metadata once, then one BenchResult per benchmark."""

    created_at: str
    sysinfo: Mapping[str, Any]
    settings: Mapping[str, Any]
    benchmarks: tuple[BenchResult, ...]
    host_load: Mapping[str, Any] = field(default_factory=dict)  # load average at start and end
    thresholds: Mapping[str, Threshold] = field(default_factory=dict)  # a baseline's, per benchmark
    schema_version: int = BENCH_SCHEMA_VERSION

    def get(self, name: str) -> BenchResult | None:
        return next((b for b in self.benchmarks if b.name == name), None)


def dump_bench_file(bf: BenchFile) -> dict[str, Any]:
    """The JSON document of a BenchFile (written by the benchmark session and `baseline`)."""
    doc = {"schema_version": BENCH_SCHEMA_VERSION, "format": BENCH_FORMAT, "created_at": bf.created_at,
           "sysinfo": dict(bf.sysinfo), "settings": dict(bf.settings), "host_load": dict(bf.host_load),
           "benchmarks": [b.to_dict() for b in bf.benchmarks]}
    if bf.thresholds:
        doc["thresholds"] = {name: t.to_dict() for name, t in bf.thresholds.items()}
    return doc


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


def _parse_cost_round(obj: Any, source: str) -> CostRound:
    _require(isinstance(obj, dict), source, "a round must be an object")
    try:
        r = CostRound(float(obj["forwarder_cpu_s"]), float(obj["client_cpu_s"]), float(obj["units"]),
                      float(obj["wall_s"]), bool(obj.get("warmup", False)))
    except (KeyError, TypeError, ValueError) as e:
        raise GateDataError(f"{source}: bad cost round {obj!r}: {e}") from None
    values = (r.forwarder_cpu_s, r.client_cpu_s, r.units, r.wall_s)
    _require(all(v > 0 and math.isfinite(v) for v in values), source,
             f"CPU times, units and wall time must be positive, got {obj!r}")
    return r


def _parse_threshold(name: str, obj: Any, source: str) -> Threshold:
    where = f"{source}: thresholds[{name!r}]"
    _require(isinstance(obj, dict), where, "must be an object")
    try:
        t = Threshold(float(obj["max_regression_pct"]), float(obj["spread_pct"]),
                      tuple(float(v) for v in obj.get("run_medians") or ()), str(obj.get("rule", "")))
    except (KeyError, TypeError, ValueError) as e:
        raise GateDataError(f"{where}: {e!r}") from None
    _require(t.max_regression_pct >= 0 and t.spread_pct >= 0, where, "percentages must be >= 0")
    return t


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
        _require(kind in BENCH_KINDS, where, f"kind must be one of {BENCH_KINDS}, got {kind!r}")
        rounds = b.get("rounds", [])
        _require(isinstance(rounds, list), where, "'rounds' must be a list")
        params = dict(b.get("params") or {})
        parse = _parse_round
        if kind == COST_KIND:
            _require(params.get("unit") in COST_UNITS, where,
                     f"a cost benchmark's params.unit must be one of {COST_UNITS}, got {params.get('unit')!r}")
            parse = _parse_cost_round  # type: ignore[assignment]
        out.append(BenchResult(name=b["name"], description=str(b.get("description", "")), kind=kind,
                               params=params, rounds=tuple(parse(r, f"{where} ({b['name']})") for r in rounds),
                               error=b.get("error")))
    names = [b.name for b in out]
    dupes = sorted({n for n in names if names.count(n) > 1})
    _require(not dupes, source, f"duplicate benchmark names: {', '.join(dupes)}")
    thresholds = doc.get("thresholds") or {}
    _require(isinstance(thresholds, dict), source, "'thresholds' must be an object")
    return BenchFile(created_at=str(doc.get("created_at", "")), sysinfo=dict(doc.get("sysinfo") or {}),
                     settings=dict(doc.get("settings") or {}), benchmarks=tuple(out),
                     host_load=dict(doc.get("host_load") or {}),
                     thresholds={str(k): _parse_threshold(str(k), v, source) for k, v in thresholds.items()})


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
    _require(isinstance(floors, list) and len(floors) > 0, source, "'floors' must be a non-empty list")
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
