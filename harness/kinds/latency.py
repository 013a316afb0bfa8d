"""Latency: connection setup time and 1-byte RTT per path; the direct path is the floor.

Each measurement (one path, one round) holds its own percentiles over
thousands of samples (harness.records.probe_json). Across rounds each percentile is
summarised as median [min-max], like throughput. "Added" = a path's median
p50 minus the floor's: what the forwarder itself costs a request.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from harness.records.results import Record
from harness.summarise.stats import Summary, summarise

FLOOR = "direct"


@dataclass(frozen=True)
class LatencyRow:
    path: str
    setup_p50_us: Summary  # connect() -> first byte of the reply
    setup_p90_us: Summary
    setup_p99_us: Summary
    rtt_p50_us: Summary  # 1-byte request -> reply on an open connection
    rtt_p90_us: Summary
    rtt_p99_us: Summary
    setup_samples: int  # over every ok round
    rtt_samples: int
    errors: int  # failed requests / connections the probe saw, every ok round
    truncated_rounds: int  # rounds that hit the time limit before taking every sample
    n_failed: int  # measurements that failed outright
    added_setup_us: float | None  # median p50 - the floor's median p50
    added_rtt_us: float | None


@dataclass(frozen=True)
class LatencySummary:
    rows: tuple[LatencyRow, ...]
    floor: LatencyRow | None
    notes: tuple[str, ...]

    def get(self, path: str) -> LatencyRow | None:
        return next((r for r in self.rows if r.path == path), None)


def _truncated(r: Record) -> bool:
    if not r.probe_raw:
        return False
    try:
        return bool(json.loads(r.probe_raw).get("truncated"))
    except (ValueError, AttributeError):
        return False


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def summarise_latency(records: Iterable[Record], path_order: Sequence[str] = ()) -> LatencySummary:
    """One row per path (path_order first), over the latency records."""
    rows_in = [r for r in records if r.driver == "latency"]
    order = list(dict.fromkeys([p for p in path_order if any(r.path == p for r in rows_in)]
                               + [r.path for r in rows_in]))
    rows = []
    for path in order:
        mine = [r for r in rows_in if r.path == path]
        ok = [r for r in mine if r.ok]
        rows.append(LatencyRow(
            path=path,
            setup_p50_us=summarise(r.setup_p50_us for r in ok), setup_p90_us=summarise(r.setup_p90_us for r in ok),
            setup_p99_us=summarise(r.setup_p99_us for r in ok),
            rtt_p50_us=summarise(r.rtt_p50_us for r in ok), rtt_p90_us=summarise(r.rtt_p90_us for r in ok),
            rtt_p99_us=summarise(r.rtt_p99_us for r in ok),
            setup_samples=sum(r.setup_samples or 0 for r in ok), rtt_samples=sum(r.rtt_samples or 0 for r in ok),
            errors=sum(r.conn_errors or 0 for r in ok), truncated_rounds=sum(_truncated(r) for r in ok),
            n_failed=len(mine) - len(ok), added_setup_us=None, added_rtt_us=None,
        ))
    floor = next((r for r in rows if r.path == FLOOR), None)
    if floor is not None:
        rows = [replace(r, added_setup_us=_minus(r.setup_p50_us.median, floor.setup_p50_us.median),
                        added_rtt_us=_minus(r.rtt_p50_us.median, floor.rtt_p50_us.median))
                for r in rows]
        floor = next(r for r in rows if r.path == FLOOR)
    return LatencySummary(tuple(rows), floor, tuple(_notes(rows, floor)))


def _notes(rows: list[LatencyRow], floor: LatencyRow | None) -> list[str]:
    notes = []
    if floor is None:
        notes.append(f"no `{FLOOR}` path in this run: there is no floor to subtract, so the figures include "
                     "the client's and the echo server's own time")
    for r in rows:
        if r.truncated_rounds:
            notes.append(f"{r.path}: {r.truncated_rounds} round(s) hit the time limit (`seconds`) before taking "
                         "every sample; their percentiles use fewer samples")
        if r.errors:
            notes.append(f"{r.path}: {r.errors} request(s) failed (see probe_raw in the result file)")
        if r.n_failed:
            notes.append(f"{r.path}: {r.n_failed} failed measurement(s) left out")
        if floor is not None and r is not floor and r.rtt_p50_us.n and floor.rtt_p50_us.n:
            assert r.rtt_p50_us.min is not None and floor.rtt_p50_us.max is not None
            if r.rtt_p50_us.min <= floor.rtt_p50_us.max and r.added_rtt_us is not None and r.added_rtt_us < 0:
                notes.append(f"{r.path}: its RTT p50 range overlaps the floor's and its median is below it: "
                             "the forwarder's added RTT is within this host's noise")
    return notes
