"""`portunus-bench gate`: microbenchmark run vs baseline and/or the quick run vs its floors; exit 1 on a regression."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import HarnessError

NAME = "gate"


def add_parser(sub: Any) -> None:
    """The verb's subparser: arguments, help and description."""
    gat = sub.add_parser("gate", help="regression gate: microbenchmark ratios vs a baseline, quick-run floors",
                         description="Compare a microbenchmark run (make bench) with a baseline: per benchmark "
                         "the per-round ratio (timing: proxy/direct time per operation; cost: forwarder CPU / "
                         "client CPU for a fixed amount of work), a REGRESSION only if its median grew more than "
                         "the baseline's threshold for it AND a one-sided Mann-Whitney U test of the rounds says "
                         "slower at --alpha; and/or check a headline-kind result file (the quick run) against "
                         "committed floors.",
                         epilog="Exit codes: 0 ok (improvements never fail), 1 regression or below a floor, "
                         "2 missing, failed or incompatible data.")
    gat.add_argument("--baseline", type=Path, metavar="FILE", help="baseline microbenchmark JSON "
                     "(results/baselines/microbench.json)")
    gat.add_argument("--current", type=Path, metavar="FILE", help="microbenchmark JSON of this run "
                     "(alone: print what it measured)")
    gat.add_argument("--max-regression-pct", type=float, default=None, metavar="N",
                     help="threshold for benchmarks the baseline has none for (a version-1 baseline, a benchmark "
                     "added since; default 50); the baseline's own per-benchmark thresholds take precedence")
    gat.add_argument("--alpha", type=float, default=None, metavar="P",
                     help="significance level of the rank test (default 0.01)")
    gat.add_argument("--floors", type=Path, metavar="FILE", help="floors JSON (results/baselines/quick-floors.json)")
    gat.add_argument("--results", type=Path, metavar="FILE", help="result file (.jsonl) of a headline-kind run, "
                     "e.g. portunus-bench run configs/quick.yaml")


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Gate a microbenchmark run and/or a quick run; exit 1 on a regression, 2 on data problems."""
    from harness.gate import verdicts
    from harness.gate.floors import check_floors, floors_exit_code
    from harness.present import gate as gate_tables
    from harness.records import bench_file

    if (args.baseline is not None and args.current is None) or (args.floors is None) != (args.results is None):
        raise HarnessError("gate: give --baseline with --current, and/or --floors with --results")
    if args.current is None and args.floors is None:
        raise HarnessError("gate: nothing to check: give --current [--baseline] and/or --floors/--results")
    default_pct = verdicts.DEFAULT_THRESHOLD_PCT if args.max_regression_pct is None else args.max_regression_pct
    alpha = verdicts.SIGNIFICANCE_ALPHA if args.alpha is None else args.alpha
    if default_pct < 0:
        raise HarnessError(f"--max-regression-pct must be >= 0, got {default_pct:g}")
    if not 0 < alpha < 1:
        raise HarnessError(f"--alpha must be between 0 and 1, got {alpha:g}")
    codes = []
    if args.current is not None:
        try:
            current = bench_file.load_bench_file(args.current)
            baseline = bench_file.load_bench_file(args.baseline) if args.baseline is not None else None
        except bench_file.GateDataError as e:
            print(f"gate: incompatible data: {e}", file=sys.stderr)
            codes.append(verdicts.EXIT_DATA)
        else:
            print(f"Microbenchmarks ({args.current}): median of rounds; ratio median [IQR]")
            print(gate_tables.render_bench_summary(current))
            if baseline is not None:
                report = verdicts.compare(baseline, current, default_pct, alpha)
                print(gate_tables.render_gate(report))
                codes.append(report.exit_code)
            else:
                codes.append(verdicts.EXIT_OK)
    if args.floors is not None:
        from harness.kinds import summarise_file
        from harness.kinds.headline import HeadlineSummary, summarise_headline
        from harness.records.results import load_results

        try:
            floors = bench_file.load_floors(args.floors)
            rs = load_results(args.results)
        except HarnessError as e:
            print(f"gate: incompatible data: {e}", file=sys.stderr)
            codes.append(verdicts.EXIT_DATA)
        else:
            # The quick run is a headline file; a file of another kind is read as one.
            summary = summarise_file(rs).summary
            if not isinstance(summary, HeadlineSummary):
                summary = summarise_headline(rs.records, rs.header.config.paths)
            checks = check_floors(floors, summary)
            print(gate_tables.render_floors(checks))
            codes.append(floors_exit_code(checks))
    # A regression is a finding and wins over missing data elsewhere (as in GateReport.exit_code).
    return verdicts.EXIT_REGRESSION if verdicts.EXIT_REGRESSION in codes else max(codes)
