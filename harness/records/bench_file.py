"""Microbenchmark files (benchmarks/microbench) and the gate's floor files: formats, loaders, pooling.

A microbenchmark file holds raw round times, so every statistic can be
recomputed: each benchmark measures the same operation through the proxy and
directly (no proxy), interleaved round by round (harness.summarise.bench
turns the rounds into ratio statistics, harness.gate into verdicts).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

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

# Benchmark kinds, and how their seconds per operation read for a person.
BENCH_KINDS = ("throughput", "latency", "rate")


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
class BenchResult:
    """One benchmark of a run: its parameters and every round (warm-ups kept, flagged)."""

    name: str
    description: str
    kind: str  # one of BENCH_KINDS
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
        _require(kind in BENCH_KINDS, where, f"kind must be one of {BENCH_KINDS}, got {kind!r}")
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
