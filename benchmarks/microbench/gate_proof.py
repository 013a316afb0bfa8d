"""`make gate-proof`: the gate against injected regressions, each alone, and against an unchanged build.

Each scenario runs the full microbenchmarks (benchmarks/microbench, as `make
gate` does) with one change applied from outside the product, then gates
the run against the baseline and checks the verdict of the benchmarks that
change must show up in:

* splice forced off (PORTUNUS_DISABLE_SPLICE=1): the splice path copies;
  expected: cost_bulk.splice REGRESSION (CPU per GB roughly doubles);
* the 4 KiB-buffer copy forwarder (slow_forwarder.py small-buffer-copy):
  expected: cost_bulk.splice and cost_bulk.copy REGRESSION;
* +100 us of CPU per accepted connection (slow_forwarder.py slow-accept):
  expected: cost_connections REGRESSION;
* the unchanged build (A/A): expected: no REGRESSION at all.

Prints every gate table and a summary; exit 0 only if every scenario came
out as expected, 1 if one did not, 2 if a benchmark run failed.

Usage: python -m benchmarks.microbench.gate_proof --baseline FILE [--keep DIR] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from harness.gate import verdicts
from harness.present.gate import render_gate
from harness.records.bench_file import load_bench_file

REPO_ROOT = Path(__file__).resolve().parents[2]
BENCH_ARGS = ["-m", "pytest", "-q", "-p", "no:cacheprovider", "benchmarks/microbench/test_microbench.py"]


@dataclass(frozen=True)
class Scenario:
    name: str  # short, for --only and file names
    what: str
    env: Mapping[str, str]
    expect_regressions: tuple[str, ...]  # benchmarks that must be REGRESSION; () = none may be


SCENARIOS = (
    Scenario("nosplice", "splice forced off (PORTUNUS_DISABLE_SPLICE=1)", {"PORTUNUS_DISABLE_SPLICE": "1"},
             ("cost_bulk.splice",)),
    Scenario("smallbuf", "4 KiB-buffer copy forwarder (slow_forwarder.py small-buffer-copy)",
             {"PORTUNUS_BENCH_FORWARDER": "small-buffer-copy"}, ("cost_bulk.splice", "cost_bulk.copy")),
    Scenario("slowaccept", "+100 us CPU per accepted connection (slow_forwarder.py slow-accept)",
             {"PORTUNUS_BENCH_FORWARDER": "slow-accept"}, ("cost_connections",)),
    Scenario("unchanged", "unchanged build (A/A)", {}, ()),
)


@dataclass(frozen=True)
class Outcome:
    scenario: Scenario
    exit_code: int  # the gate's
    regressions: tuple[str, ...]
    passed: bool
    why: str


def judge(s: Scenario, report: verdicts.GateReport) -> Outcome:
    """Whether the gate's report is what the scenario must produce."""
    regressed = tuple(r.name for r in report.rows if r.verdict == verdicts.VERDICT_REGRESSION)
    if s.expect_regressions:
        missed = [n for n in s.expect_regressions if n not in regressed]
        ok = not missed and report.exit_code == verdicts.EXIT_REGRESSION
        why = "caught" if ok else f"MISSED: {', '.join(missed) or 'exit code'}"
    else:
        ok = report.exit_code == verdicts.EXIT_OK
        why = "no regression flagged" if ok else f"FALSE ALARM (exit {report.exit_code})"
    return Outcome(s, report.exit_code, regressed, ok, why)


def run_scenario(s: Scenario, baseline: Path, out_dir: Path) -> Outcome | None:
    """Benchmarks under the scenario's environment, then the gate; None if the benchmarks failed."""
    out = out_dir / f"{s.name}.json"
    env = {**os.environ, **s.env, "PORTUNUS_BENCH_OUT": str(out)}
    for k in ("PORTUNUS_DISABLE_SPLICE", "PORTUNUS_BENCH_FORWARDER"):
        if k not in s.env:
            env.pop(k, None)
    log = out_dir / f"{s.name}.log"
    with log.open("w") as f:
        rc = subprocess.run([sys.executable, *BENCH_ARGS], cwd=REPO_ROOT, env=env, stdout=f,
                            stderr=subprocess.STDOUT, check=False).returncode
    if rc != 0:
        print(log.read_text()[-4000:])
        print(f"gate-proof: {s.name}: benchmarks exited {rc}; log {log}")
        return None
    report = verdicts.compare(load_bench_file(baseline), load_bench_file(out))
    print(render_gate(report))
    return judge(s, report)


def render_summary(outcomes: Sequence[Outcome]) -> str:
    lines = ["| scenario | must be flagged | flagged (REGRESSION) | gate exit | verdict |", "| --- | --- | --- | ---: | --- |"]
    for o in outcomes:
        lines.append(f"| {o.scenario.what} | {', '.join(o.scenario.expect_regressions) or 'nothing'} | "
                     f"{', '.join(o.regressions) or 'nothing'} | {o.exit_code} | {o.why} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--baseline", type=Path, required=True)
    ap.add_argument("--keep", type=Path, metavar="DIR", help="keep the runs' files in DIR (default: a temp dir, removed)")
    ap.add_argument("--only", nargs="+", choices=[s.name for s in SCENARIOS], help="run these scenarios only")
    args = ap.parse_args(argv)
    chosen = [s for s in SCENARIOS if not args.only or s.name in args.only]
    with tempfile.TemporaryDirectory(prefix="portunus-gate-proof-") as tmp:
        out_dir = args.keep or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        outcomes = []
        for i, s in enumerate(chosen, 1):
            print(f"== {i}/{len(chosen)}: {s.what}", flush=True)
            o = run_scenario(s, args.baseline, out_dir)
            if o is None:
                return 2
            print(f"-> {o.why}\n", flush=True)
            outcomes.append(o)
    print("Gate proof:")
    print(render_summary(outcomes))
    ok = all(o.passed for o in outcomes)
    print(f"gate-proof: {'every scenario as expected' if ok else 'FAILED'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
