"""`portunus-bench baseline RUN...`: pool microbenchmark runs into one gate baseline file, with thresholds."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import EXIT_OK

NAME = "baseline"


def add_parser(sub: Any) -> None:
    """The verb's subparser: arguments, help and description."""
    bas = sub.add_parser("baseline", help="pool microbenchmark runs into a gate baseline file",
                         description="Pool the rounds of several microbenchmark runs (same benchmarks, parameters "
                         "and settings) into one baseline, and store per benchmark the gate's threshold derived "
                         "from the spread of the runs' medians (harness/gate/thresholds.py). "
                         "`make baseline` runs the benchmarks BASELINE_RUNS times and calls this.")
    bas.add_argument("runs", nargs="+", type=Path, metavar="RUN", help="microbenchmark JSON files")
    bas.add_argument("--out", type=Path, required=True, metavar="FILE",
                     help="baseline to write (results/baselines/microbench.json)")


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Pool the runs into one baseline file with per-benchmark thresholds."""
    import dataclasses

    from harness.errors import HarnessError
    from harness.gate.thresholds import MIN_RUNS, derive_thresholds
    from harness.present import gate as gate_tables
    from harness.records import bench_file

    if len(args.runs) < MIN_RUNS:
        raise HarnessError(f"baseline: give >= {MIN_RUNS} runs: the thresholds come from their spread")
    runs = [bench_file.load_bench_file(p) for p in args.runs]
    pooled = dataclasses.replace(bench_file.pool_bench_files(runs), thresholds=derive_thresholds(runs))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(bench_file.dump_bench_file(pooled), indent=1) + "\n")
    print(gate_tables.render_bench_summary(pooled))
    print(gate_tables.render_thresholds(pooled))
    print(f"wrote {args.out} ({len(args.runs)} run(s) pooled)", file=sys.stderr)
    return EXIT_OK
