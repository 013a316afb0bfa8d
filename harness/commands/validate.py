"""`portunus-bench validate FILE...`: experiment files (the size of each plan) and result files (loadable,
summarisable by their kind)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import EXIT_OK

NAME = "validate"


def add_parser(sub: Any) -> None:
    """The verb's subparser: arguments, help and description."""
    val = sub.add_parser("validate", help="validate experiment files (and result files) and show their size",
                         description="Load and validate each FILE (exit 2 with one line per problem): an "
                         "experiment file (*.yaml: its config rules, the size of its plan) or a result file "
                         "(*.jsonl: every line readable at its schema version, its records summarised by its "
                         "kind).")
    val.add_argument("configs", nargs="+", metavar="FILE")


def _validate_config(c: str) -> str:
    from harness.define.load import load_config
    from harness.define.plan import build_plan
    from harness.kinds import KINDS

    cfg = load_config(c)
    plan = build_plan(cfg)
    per_run = cfg.seconds + cfg.omit_seconds
    kind = KINDS[cfg.kind]
    tool = "probe" if kind.uses_probe else "wrk" if kind.uses_http else "iperf3"
    if kind.seconds_is_limit:  # it stops when its samples are in
        what = f"at most {len(plan) * per_run / 60:.1f} min of {tool} time"
    else:
        what = f">= {len(plan) * per_run / 60:.1f} min of {tool} time"
    return f"{c}: ok ({cfg.kind} '{cfg.name}', {len(plan)} measurements, {what})"


def _validate_results(c: str) -> str:
    from harness.kinds import summarise_file
    from harness.records.results import load_results

    rs = load_results(c)  # ResultsError (exit 2) names the file and line
    summarise_file(rs, [rs])
    failed = sum(not r.ok for r in rs.records)
    ends = [e for e in rs.events if e["type"] == "run_end"]
    state = (f"last run {ends[-1].get('status')}" if ends
             else "no run_end line: the run was killed or is still going")
    return (f"{c}: ok (result file, schema {rs.file_schema_version}, {rs.header.kind} '{rs.header.config.name}', "
            f"{len(rs.records)} measurements, {failed} failed, {state})")


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Validate each file and print what it holds."""
    from harness.records.results import SUFFIX

    for c in args.configs:
        print(_validate_results(c) if Path(c).suffix == SUFFIX else _validate_config(c))
    return EXIT_OK
