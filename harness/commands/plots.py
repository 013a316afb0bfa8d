"""`portunus-bench plots DIR`: only the figures of a result directory (PNG + SVG in DIR/plots/)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.commands.report import draw_plots
from harness.errors import EXIT_OK

NAME = "plots"


def add_parser(sub: Any) -> None:
    """The verb's subparser: arguments, help and description."""
    plt = sub.add_parser("plots", help="draw the figures of a result directory (PNG + SVG in DIR/plots/)",
                         description="Load every *.jsonl result file in DIR and draw its figures (sweep: "
                         "delivered vs offered and delivered/offered; headline bars; A/B ratio per round; "
                         "cap accuracy) into DIR/plots/ as PNG and SVG. Measures nothing.")
    plt.add_argument("dir", type=Path, metavar="DIR")


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Draw DIR/plots/."""
    from harness.kinds import summarise_results
    from harness.present.plots import PLOTS_DIRNAME
    from harness.records.results import load_results_dir

    summaries = summarise_results(load_results_dir(args.dir))
    written = draw_plots(summaries.files, args.dir, args.dir)
    n = sum(len(v) for v in written.values())
    print(f"wrote {n} file(s) into {args.dir / PLOTS_DIRNAME}", file=sys.stderr)
    return EXIT_OK
