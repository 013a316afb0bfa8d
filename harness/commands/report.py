"""`portunus-bench report DIR`: report.md and plots/ of a result directory, from the saved files (measures nothing)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import EXIT_OK
from harness.kinds.base import FileSummary

NAME = "report"


def add_parser(sub: Any) -> None:
    """The verb's subparser: arguments, help and description."""
    rep = sub.add_parser("report", help="render the markdown report of a result directory",
                         description="Load every *.jsonl result file in DIR and render markdown tables "
                         "(headline: paths as columns, Mbit/s median [min-max], vs iptables / direct / "
                         "reference, forwarder CPU s/GB; A/B pairs; cap accuracy; sweep). Prints it and "
                         "writes DIR/report.md.")
    rep.add_argument("dir", type=Path, metavar="DIR")
    rep.add_argument("--out", type=Path, default=None, metavar="FILE", help="write here instead of DIR/report.md")
    rep.add_argument("--no-plots", action="store_true",
                     help="do not (re)draw DIR/plots/ (by default the report links the plots it draws)")


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Render DIR/report.md (and its plots), print it."""
    from harness.kinds import summarise_results
    from harness.present.report import render_report
    from harness.records.results import load_results_dir

    summaries = summarise_results(load_results_dir(args.dir))
    out = args.out or args.dir / "report.md"
    plots = {} if args.no_plots else draw_plots(summaries.files, args.dir, out.parent)
    text = render_report(summaries, title=f"Portunus benchmark results: {args.dir.resolve().name}", plots=plots)
    out.write_text(text)
    print(text, end="")
    print(f"wrote {out}", file=sys.stderr)
    return EXIT_OK


def draw_plots(files: Sequence[FileSummary[Any]], results_dir: Path, link_base: Path) -> dict[str, list[str]]:
    """Draw results_dir/plots/; returns result file name -> PNG/SVG paths relative to link_base."""
    from harness.present.plots import PLOTS_DIRNAME, dump_plots

    written = dump_plots(files, results_dir / PLOTS_DIRNAME)
    base = link_base.resolve()
    return {name: [os.path.relpath(p.resolve(), base) for p in files] for name, files in written.items()}
