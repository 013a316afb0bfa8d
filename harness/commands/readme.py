"""`portunus-bench readme DIR README`: the report's sections between README's results markers."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.commands.report import draw_plots
from harness.errors import EXIT_OK, HarnessError

NAME = "readme"


def add_parser(sub: Any) -> None:
    """The verb's subparser: arguments, help and description."""
    rdm = sub.add_parser("readme", help="put a result directory's tables into README.md between markers",
                         description="Render the report's sections for RESULTS_DIR and replace the text "
                         "between the lines '<!-- results:begin -->' and '<!-- results:end -->' of README. "
                         "Measures nothing; draws RESULTS_DIR/plots/ first unless --no-plots.")
    rdm.add_argument("dir", type=Path, metavar="RESULTS_DIR")
    rdm.add_argument("readme", type=Path, metavar="README")
    rdm.add_argument("--no-plots", action="store_true", help="do not draw or link plots")


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Replace README's results block with the directory's sections."""
    from harness.kinds import summarise_results
    from harness.present.readme import replace_results
    from harness.present.report import render_readme_results
    from harness.records.results import load_results_dir

    summaries = summarise_results(load_results_dir(args.dir))
    base = args.readme.resolve().parent
    plots = {} if args.no_plots else draw_plots(summaries.files, args.dir, base)
    rel_dir = os.path.relpath(args.dir.resolve(), base)
    text = render_readme_results(summaries, rel_dir, plots)
    try:
        old = args.readme.read_text()
    except OSError as e:
        raise HarnessError(f"cannot read {args.readme}: {e.strerror}") from None
    args.readme.write_text(replace_results(old, text, str(args.readme)))
    print(f"updated {args.readme} from {args.dir} ({len(summaries.files)} result file(s))", file=sys.stderr)
    return EXIT_OK
