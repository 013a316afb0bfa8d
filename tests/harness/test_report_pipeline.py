"""The Makefile's report pipeline: `make report` re-renders saved results without measuring, and an
interrupted sweep re-run (`make sweep` passes --resume) measures only what is missing.

`make -o .venv/.setup-stamp` keeps make from running the set-up step (apt, pip): that step is not
what these tests are about, and it must not touch the network here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.define.load import load_config
from harness.define.plan import build_plan
from harness.records.results import load_results
from tests.harness.test_report import GOLDEN, copy_results

REPO = Path(__file__).resolve().parents[2]
MAKE = shutil.which("make") or "/usr/bin/make"
SKIP_SETUP = ("-o", ".venv/.setup-stamp")


def make(*args: str, env: dict[str, str] | None = None, timeout_s: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([MAKE, "--no-print-directory", *SKIP_SETUP, *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout_s, env=env)


def digest(d: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.glob("*.jsonl"))}


def test_make_report_rerenders_without_measuring(tmp_path: Path) -> None:
    d = copy_results(tmp_path / "smoke")
    before = digest(d)
    # No iperf3 (nor anything else) on PATH: a report that tried to measure would fail.
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    env = {**os.environ, "PATH": str(empty_bin)}
    assert shutil.which("iperf3", path=env["PATH"]) is None
    proc = make("report", f"RESULTS={d}", env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (d / "report.md").read_text() == GOLDEN.read_text()
    assert len(list((d / "plots").glob("*.png"))) == 5 and len(list((d / "plots").glob("*.svg"))) == 5
    assert digest(d) == before, "re-rendering must not change the result files"


def _measurements_on_disk(path: Path) -> int:
    return path.read_text().count('"type":"measurement"') if path.exists() else 0


@pytest.mark.timeout(240)
def test_interrupted_sweep_resumed_by_make_sweep_measures_only_what_is_missing(tmp_path: Path) -> None:
    cfg_path = tmp_path / "tiny-sweep.yaml"
    cfg_path.write_text(json.dumps({  # JSON is YAML
        "schema_version": 1, "name": "tiny", "kind": "sweep", "paths": ["direct", "standalone"],
        "offered_mbps": [20, 50], "rounds": 2, "seconds": 1, "omit_seconds": 0, "shuffle_seed": 7}))
    plan = build_plan(load_config(cfg_path))
    out = tmp_path / "run"
    results = out / "tiny.jsonl"

    # 1. Interrupt a real run after its third measurement is on disk.
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(cfg_path), "--out", str(out)],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while _measurements_on_disk(results) < 3:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the run never got to its third measurement"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, stderr
    first = load_results(results)
    assert not first.complete and 3 <= len(first.records) < len(plan)
    done_keys = {(r.round, r.path, r.offered_mbps, r.cap_bytes_per_s) for r in first.records}
    first_lines = results.read_text().splitlines()

    # 2. `make sweep` with the same RESULTS resumes it: only the missing measurements run.
    mk = make("sweep", f"RESULTS={out}", f"SWEEP_CONFIGS={cfg_path}")
    assert mk.returncode == 0, mk.stdout + mk.stderr
    rs = load_results(results)
    assert rs.complete and results.read_text().splitlines()[:len(first_lines)] == first_lines
    new = rs.records[len(first.records):]
    new_keys = [(r.round, r.path, r.offered_mbps, r.cap_bytes_per_s) for r in new]
    assert len(new_keys) == len(set(new_keys)) and not done_keys & set(new_keys)
    assert done_keys | set(new_keys) == {m.key[:4] for m in plan} and all(r.ok for r in rs.records)
    assert [e["type"] for e in rs.events].count("run_resumed") == 1
    # ... and rendered the report over the whole run.
    report = (out / "report.md").read_text()
    assert "| Offered, Mbit/s | `direct` | % | `standalone` | % |" in report and "| 50 |" in report
    assert (out / "plots" / "tiny-delivered.png").stat().st_size > 0

    # 3. Once complete, another resume measures nothing.
    again = make("sweep", f"RESULTS={out}", f"SWEEP_CONFIGS={cfg_path}")
    assert again.returncode == 0, again.stderr
    assert len(load_results(results).records) == len(plan)
