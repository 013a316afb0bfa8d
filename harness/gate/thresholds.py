"""Per-benchmark regression thresholds, derived from the run-to-run spread of the baseline's runs.

A baseline pools several separate runs (`make baseline`, BASELINE_RUNS). Each
run's median ratio differs from the others by what changes between runs and
not within one: CPU placement, the state of the host's caches and other
load, TCP autotuning of fresh connections. The gate's rank test cannot see
that (it compares rounds, and rounds of one run share their run's offset),
so the threshold has to: it is set above the largest difference between two
baseline runs, times a margin for runs the baseline did not see:

    max_regression_pct = max(floor of its kind, SPREAD_FACTOR x spread_pct)
    spread_pct         = (max - min) of the runs' median ratios, % of the pooled median

A new run whose median lies within the baseline runs' range is at most
spread_pct above the pooled median; the factor allows twice that. The floor
keeps a benchmark that happened to be steady during the baseline's runs
from failing on the first ordinary wobble, and it differs by kind because
the runs of one baseline see one stretch of the host's load, not all of it.
On the shared 2-vCPU dev host (results/gate/README.md), two 5-run
baselines an hour apart: the timing ratios' run-to-run spread was 8-36% in
one and 20-138% in the other, the cost ratios' (forwarder / client CPU)
4-14% in both; over 14 later gate runs at load 7-21 a cost ratio's median
was up to 11% above its baseline's (13% apart from run to run). Timing
keeps the flat 50% the gate had before; cost gets 20%, still far below the
smallest injected regression `make gate-proof` must catch (+54-60% CPU per
connection for +100 us per accept).
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from harness.records.bench_file import COST_KIND, BenchFile, Threshold

SPREAD_FACTOR = 2.0
MIN_COST_THRESHOLD_PCT = 20.0
MIN_TIMING_THRESHOLD_PCT = 50.0
# Below this many runs there is no run-to-run spread to measure.
MIN_RUNS = 2


def floor_pct(kind: str) -> float:
    """The lowest threshold a benchmark of this kind gets, however steady its baseline runs were."""
    return MIN_COST_THRESHOLD_PCT if kind == COST_KIND else MIN_TIMING_THRESHOLD_PCT


def rule(kind: str) -> str:
    return f"max({floor_pct(kind):g}%, {SPREAD_FACTOR:g} x spread of the runs' median ratios)"


def derive_thresholds(runs: Sequence[BenchFile]) -> dict[str, Threshold]:
    """A threshold per benchmark of the first run, from every run's median ratio of it.

    Benchmarks that failed or have no measured rounds in some run get none (the
    gate then uses its default for them).
    """
    if len(runs) < MIN_RUNS:
        raise ValueError(f"thresholds need the spread of >= {MIN_RUNS} runs, got {len(runs)}")
    out = {}
    for bench in runs[0].benchmarks:
        medians = []
        pooled = []
        for run in runs:
            b = run.get(bench.name)
            if b is None or b.error or not b.ratios():
                break
            medians.append(statistics.median(b.ratios()))
            pooled += b.ratios()
        else:
            center = statistics.median(pooled)
            spread = 100.0 * (max(medians) - min(medians)) / center
            out[bench.name] = Threshold(round(max(floor_pct(bench.kind), SPREAD_FACTOR * spread), 1),
                                        round(spread, 2), tuple(round(m, 4) for m in medians), rule(bench.kind))
    return out
