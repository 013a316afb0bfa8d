"""`portunus-bench validate CONFIG...`: load and validate experiment files; the size of each plan."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from harness.errors import EXIT_OK

NAME = "validate"


def add_parser(sub: Any) -> None:
    """The verb's subparser: arguments, help and description."""
    val = sub.add_parser("validate", help="validate experiment files and show their plans' size",
                         description="Load and validate each CONFIG (exit 2 with one line per problem).")
    val.add_argument("configs", nargs="+", metavar="CONFIG")


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Validate each config and print its plan's size."""
    from harness.define.load import load_config
    from harness.define.plan import build_plan
    from harness.kinds import KINDS

    for c in args.configs:
        cfg = load_config(c)
        plan = build_plan(cfg)
        per_run = cfg.seconds + cfg.omit_seconds
        kind = KINDS[cfg.kind]
        tool = "probe" if kind.uses_probe else "wrk" if kind.uses_http else "iperf3"
        if kind.seconds_is_limit:  # it stops when its samples are in
            what = f"at most {len(plan) * per_run / 60:.1f} min of {tool} time"
        else:
            what = f">= {len(plan) * per_run / 60:.1f} min of {tool} time"
        print(f"{c}: ok ({cfg.kind} '{cfg.name}', {len(plan)} measurements, {what})")
    return EXIT_OK
