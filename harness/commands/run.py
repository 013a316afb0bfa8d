"""`portunus-bench run CONFIG`: preflight, every planned measurement, one result file; prints its section."""

from __future__ import annotations

import argparse
import datetime as dt
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import EXIT_FAILED_MEASUREMENTS, EXIT_OK, HarnessError

NAME = "run"

DEFAULT_RESULTS_ROOT = Path("results")


def default_out_dir() -> Path:
    """results/<date>-<host>, like the Makefile's RESULTS."""
    return DEFAULT_RESULTS_ROOT / f"{dt.date.today().isoformat()}-{socket.gethostname().split('.')[0]}"


def add_parser(sub: Any) -> None:
    """The verb's subparser: arguments, help and description."""
    p = sub.add_parser("run", help="run an experiment definition (configs/*.yaml)",
                       description="Run the experiment in CONFIG: preflight, then every planned measurement "
                       "(rounds interleaved across paths, shuffled within a round). Each measurement is "
                       "appended to OUT/<name>.jsonl as it ends. Prints the report section when done.")
    p.add_argument("config", metavar="CONFIG", help="experiment YAML file, e.g. configs/headline.yaml")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                     help="result directory (default: results/<date>-<host>)")
    p.add_argument("--resume", action="store_true",
                     help="continue OUT/<name>.jsonl: skip measurements it already holds (ok ones), run the rest")
    p.add_argument("--skip-unavailable", action="store_true",
                     help="measure the available paths and record why the others were skipped, "
                   "instead of stopping with an error")
    p.add_argument("--workdir", type=Path, default=None, metavar="DIR",
                     help="parent of the scratch directory (configs, logs, server data); default: $TMPDIR. "
                   "Must not be tmpfs for the client path (portunus-server refuses a tmpfs state.db)")
    p.add_argument("--keep-workdir", action="store_true", help="keep the scratch directory (forwarder logs)")
    p.add_argument("--base-port", type=int, default=None, metavar="PORT",
                     help="override the config's base_port: fixed ports PORT, PORT+1, ... (checked free first)")


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Run the experiment; exit 1 if a measurement failed, 128+N if signal N stopped it."""
    from harness.define.load import load_config, with_base_port
    from harness.kinds import summarise_file
    from harness.measure.runner import run_experiment
    from harness.present.report import render_file
    from harness.records.results import SUFFIX, load_results

    cfg = load_config(args.config)
    if args.base_port is not None:
        cfg = with_base_port(cfg, args.base_port, f"--base-port with {args.config}")
    out_dir: Path = args.out or default_out_dir()
    results_path = out_dir / f"{cfg.name}{SUFFIX}"
    if results_path.exists() and not args.resume:
        raise HarnessError(f"{results_path} already exists: pass --resume to continue it, or choose another --out")
    outcome = run_experiment(cfg, results_path, resume=args.resume, skip_unavailable=args.skip_unavailable,
                             argv=["portunus-bench", *argv], workdir_root=args.workdir,
                             keep_workdir=args.keep_workdir)
    if not results_path.exists():  # stopped by a signal before the first line was written
        return outcome.exit_code
    print(render_file(summarise_file(load_results(results_path))))
    print(f"results: {results_path}", file=sys.stderr)
    if outcome.interrupted:
        return outcome.exit_code
    return EXIT_FAILED_MEASUREMENTS if any(not r.ok for r in outcome.records) else EXIT_OK
