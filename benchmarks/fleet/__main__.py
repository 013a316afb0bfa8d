"""`python -m benchmarks.fleet`: run the fleet scenarios, write results/fleet/<run>.json, plots and summary."""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.fleet import report, scenarios

# Result file format history:
#   1  host, scenarios {pushes, real, sim}
RESULT_FORMAT = 1
SCENARIOS = ("pushes", "real", "sim")
HOST_NOTE = ("shared 2-vCPU VM: other engineers' test suites ran at the same time, so absolute times are "
             "noisy; ratios within one run (first vs last pushes) are what to compare")


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parents[2]).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def host_info() -> dict[str, Any]:
    import grpc

    return {"hostname": socket.gethostname(), "cpus": os.cpu_count(), "kernel": platform.release(),
            "python": platform.python_version(), "grpcio": grpc.__version__,
            "commit": _git("rev-parse", "HEAD"), "dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
            "mem_total_mb": os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20,
            "note": HOST_NOTE}


def _stop_on_sigterm() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")
    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.fleet", description=__doc__)
    ap.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {', '.join(SCENARIOS)}")
    ap.add_argument("--out", default="results/fleet", help="directory for <run>.json, <run>.md and plots")
    ap.add_argument("--run", default=f"{datetime.date.today()}-{socket.gethostname().split('.')[0]}")
    ap.add_argument("--pushes", type=int, default=1000, help="sequential pushes to one client")
    ap.add_argument("--large-rules", type=int, default=10000, help="rules on that client for the large phase "
                    "(0: skip it)")
    ap.add_argument("--large-pushes", type=int, default=100, help="sequential pushes at --large-rules")
    ap.add_argument("--real-clients", type=int, default=100)
    ap.add_argument("--real-outages", type=_floats, default=[3.0, 60.0], metavar="S,S")
    ap.add_argument("--sim-clients", type=_ints, default=[1000, 2000, 4000], metavar="N,N",
                    help="fleet sizes tried in turn; stops at the first that breaks")
    ap.add_argument("--sim-per-worker", type=int, default=250, help="simulated clients per process")
    ap.add_argument("--sim-concurrency", type=int, default=8, help="pushes in flight at once")
    ap.add_argument("--sim-outages", type=_floats, default=[3.0, 60.0], metavar="S,S")
    ap.add_argument("--pythonpath", help="run server and clients from this checkout instead (a before/after run)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, state.db, bundles)")
    args = ap.parse_args(argv)
    chosen = [s for s in args.scenarios.split(",") if s]
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        print(f"error: unknown scenario(s) {', '.join(unknown)} (choose from {', '.join(SCENARIOS)})", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    _stop_on_sigterm()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{args.run}.json"
    result: dict[str, Any] = {"format": RESULT_FORMAT, "run": args.run, "host": host_info(),
                              "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
                              "options": {k: v for k, v in vars(args).items() if k not in ("out", "keep")},
                              "scenarios": {}}
    root = Path(tempfile.mkdtemp(prefix="portunus-fleet-", dir="/tmp"))  # /tmp is ext4 here; the server refuses tmpfs
    status = 0
    try:
        for name in chosen:
            logging.info("scenario %s", name)
            try:
                if name == "pushes":
                    data = scenarios.run_pushes(root / name, pushes=args.pushes, large_rules=args.large_rules,
                                                large_pushes=args.large_pushes, pythonpath=args.pythonpath)
                elif name == "real":
                    data = scenarios.run_real(root / name, clients=args.real_clients, outages_s=args.real_outages,
                                              pythonpath=args.pythonpath)
                else:
                    data = scenarios.run_sim(root / name, sizes=args.sim_clients, per_worker=args.sim_per_worker,
                                             concurrency=args.sim_concurrency, outages_s=args.sim_outages,
                                             pythonpath=args.pythonpath)
            except (RuntimeError, TimeoutError, OSError) as e:
                logging.error("scenario %s failed: %s", name, e)
                data = {"error": str(e)}
                status = 1
            result["scenarios"][name] = data
            result["finished"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
            path.write_text(json.dumps(result, indent=1) + "\n")  # kept even if a later scenario dies
    finally:
        if args.keep:
            print(f"temp dir kept: {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    summary = report.render(path)
    print(summary)
    return status


if __name__ == "__main__":
    sys.exit(main())
