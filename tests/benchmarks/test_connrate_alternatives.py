"""benchmarks/connrate_alternatives.py runs end to end (a short round, real processes) and writes its record."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_one_short_round_measures_each_kind_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "alt.json"
    subprocess.run([sys.executable, "-m", "benchmarks.connrate_alternatives", "--rounds", "1", "--seconds", "1",
                    "--kinds", "haproxy,portunus,min_epoll", "--json-out", str(out)],
                   cwd=REPO, check=True, timeout=180, capture_output=True)
    doc = json.loads(out.read_text())
    assert doc["kinds"] == ["haproxy", "portunus", "min_epoll"]
    assert {s["kind"] for s in doc["samples"]} == set(doc["kinds"])
    for s in doc["samples"]:
        assert s["errors"] == 0 and s["alive_after"], s
        assert s["connections"] > 0 and s["cpu_us_per_conn"] > 0
    assert doc["summary"]["haproxy"]["cpu_vs_haproxy"] == 1.0


def test_a_portunus_build_that_does_not_exist_is_a_usage_error(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "benchmarks.connrate_alternatives", "--portunus", f"old={tmp_path}"],
                       cwd=REPO, timeout=60, capture_output=True, text=True)
    assert r.returncode == 2
    assert "VENV/bin/portunus-standalone" in r.stderr
