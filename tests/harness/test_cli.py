"""`portunus-bench` end to end: real runs, signals mid-run, preflight errors, resume, report."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.define.load import parse_config
from harness.errors import PreflightError
from harness.measure.preflight import check_paths
from harness.measure.runner import run_experiment
from harness.paths import PATHS, Availability, ForwardPath
from harness.paths import iptables as ipt
from harness.records.results import load_results, load_results_dir
from harness.site import procs
from tests.harness.conftest import nat_rules

REPO = Path(__file__).resolve().parents[2]


def bench(*args: str, timeout_s: float = 170, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True,
                          timeout=timeout_s, cwd=REPO, env=env)


def write_config(tmp: Path, **kw) -> Path:
    doc = {"schema_version": 1, "name": "t", "kind": "headline", "rounds": 1, "seconds": 1, "omit_seconds": 0, **kw}
    p = tmp / "t.yaml"
    p.write_text(json.dumps(doc))  # JSON is YAML
    return p


@pytest.mark.timeout(200)
def test_quick_config_runs_end_to_end_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "res"
    proc = bench("run", "configs/quick.yaml", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rs = load_results(out / "quick.jsonl")
    cfg_paths = rs.header.config.paths
    assert sorted(r.path for r in rs.records) == sorted(cfg_paths) and all(r.ok for r in rs.records)
    assert rs.complete and rs.header.sysinfo.commit and rs.header.sysinfo.sysctls["fs.pipe-max-size"]
    assert "| Throughput, Mbit/s: median [min–max] |" in proc.stdout
    rep = bench("report", str(out))
    assert rep.returncode == 0, rep.stderr
    md = (out / "report.md").read_text()
    for p in cfg_paths:
        assert f"`{p}`" in md
    assert "vs `iptables`" in md and "vs `reference`" in md and "Forwarder CPU, s/GB" in md
    # An existing file is never overwritten.
    again = bench("run", "configs/quick.yaml", "--out", str(out))
    assert again.returncode == 2 and "--resume" in again.stderr


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_mid_run_stops_cleanly(tmp_path: Path, sig: int) -> None:
    cfg = write_config(tmp_path, paths=["iptables", "standalone"], rounds=4, seconds=2)
    out = tmp_path / "res"
    proc = subprocess.Popen([sys.executable, "-m", "harness", "run", str(cfg), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    chain = ipt.chain_name(proc.pid)
    results = out / "t.jsonl"
    try:
        # Wait until at least one measurement is on disk and an iptables measurement is running
        # (chain present and an iperf3 client in flight): the worst moment to be stopped.
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "never caught the run mid-measurement"
            done = results.exists() and results.read_text().count('"type":"measurement"') >= 1
            kids = procs.descendants(proc.pid)
            if done and chain in nat_rules() and any("iperf3 -c" in _cmdline(k) for k in kids):
                break
            time.sleep(0.05)
        kids = procs.descendants(proc.pid)
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
            ipt.remove_chain(chain)
    assert proc.returncode == 128 + sig, stderr.decode()
    assert chain not in nat_rules()
    deadline = time.monotonic() + 5
    while any(procs.pid_alive(k) for k in kids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not [(k, _cmdline(k)) for k in kids if procs.pid_alive(k)]
    rs = load_results(results)
    assert 1 <= len(rs.records) < 8 and all(r.ok for r in rs.records)
    assert rs.events[-1]["type"] == "run_end" and rs.events[-1]["status"] == "interrupted"
    assert not rs.complete and b"stopped cleanly" in stderr


def test_preflight_missing_iperf3(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, paths=["direct"])
    proc = bench("run", str(cfg), "--out", str(tmp_path / "o"), env={**os.environ, "PATH": str(tmp_path)})
    assert proc.returncode == 2
    assert "iperf3 is not installed: apt-get install iperf3" in proc.stderr
    assert not (tmp_path / "o").exists()  # nothing measured, nothing written


def test_preflight_busy_port(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        cfg = write_config(tmp_path, paths=["direct", "standalone"], base_port=port)
        proc = bench("run", str(cfg), "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert f"port(s) {port}" in proc.stderr and "pick another base port" in proc.stderr


def test_fixed_base_ports_work(tmp_path: Path) -> None:
    from harness.site.netutil import port_bindable

    # Below the ephemeral range (32768+), where no outgoing connection can be holding the port.
    base = next(p for p in range(20000, 32000, 7) if port_bindable(p) and port_bindable(p + 1))
    cfg = parse_config({"name": "t", "kind": "headline", "paths": ["standalone"], "rounds": 1, "seconds": 1,
                        "omit_seconds": 0, "base_port": base})
    outcome = run_experiment(cfg, tmp_path / "t.jsonl")
    assert [r.ok for r in outcome.records] == [True], outcome.records[0].error
    assert outcome.records[0].path_info and base + 1 in _ports_in(tmp_path / "t.jsonl")


def _ports_in(results: Path) -> set[int]:
    raw = load_results(results).records[0].iperf_raw or ""
    return {c["remote_port"] for c in json.loads(raw)["start"]["connected"]}


class _Unavailable(ForwardPath):
    name = "unavailable_for_test"
    description = "never available"

    def available(self) -> Availability:
        return Availability.no("the frobnicator is missing: apt-get install frobnicator")

    def start(self, setup):  # pragma: no cover - never started
        raise AssertionError

    def stop(self) -> None:
        pass


def test_unavailable_paths_stop_the_run_unless_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PATHS, "unavailable_for_test", _Unavailable)
    with pytest.raises(PreflightError, match="(?s)frobnicator is missing.*--skip-unavailable"):
        check_paths(["direct", "unavailable_for_test"], skip_unavailable=False)
    cfg = parse_config({"name": "t", "kind": "headline", "paths": ["direct", "unavailable_for_test"],
                        "rounds": 1, "seconds": 1, "omit_seconds": 0})
    outcome = run_experiment(cfg, tmp_path / "t.jsonl", skip_unavailable=True)
    rs = load_results(tmp_path / "t.jsonl")
    assert [r.path for r in rs.records] == ["direct"] and rs.records[0].ok
    assert rs.header.unavailable_paths == {"unavailable_for_test": outcome.unavailable["unavailable_for_test"]}


def test_resume_runs_only_what_is_missing(tmp_path: Path) -> None:
    cfg = parse_config({"name": "t", "kind": "headline", "paths": ["direct"], "rounds": 3, "seconds": 1,
                        "omit_seconds": 0})
    path = tmp_path / "t.jsonl"
    first = run_experiment(cfg, path)
    assert len(first.records) == 3
    # Simulate a run killed after its second measurement: drop the last record and the run_end line.
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:-2]))
    second = run_experiment(cfg, path, resume=True)
    assert second.skipped_done == 2 and [r.round for r in second.records] == [3]
    rs = load_results(path)
    assert sorted(r.round for r in rs.records) == [1, 2, 3] and rs.complete
    # The resumed run recorded who measured round 3: the same checkout here, so one commit twice.
    resumed = [e for e in rs.events if e["type"] == "run_resumed"]
    assert len(resumed) == 1 and resumed[0]["sysinfo"]["commit"] == rs.header.sysinfo.commit
    assert rs.provenance() == [(rs.header.sysinfo.commit, rs.header.sysinfo.dirty)] * 2
    changed = parse_config({**cfg.to_dict(), "seconds": 2})
    with pytest.raises(Exception, match="different config"):
        run_experiment(changed, path, resume=True)


def test_report_on_a_corrupt_or_newer_file_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"type": "header", "format": "portunus-bench-results", "schema_version": 99}\n')
    proc = bench("report", str(tmp_path))
    assert proc.returncode == 2 and "schema_version 99, newer than" in proc.stderr
    (tmp_path / "bad.jsonl").write_text("garbage\n")
    proc = bench("report", str(tmp_path))
    assert proc.returncode == 2 and "bad.jsonl:1: corrupt line" in proc.stderr


def test_help_explains_every_flag() -> None:
    for verb in ("run", "compare", "report", "sysinfo", "cleanup", "paths", "validate"):
        proc = bench(verb, "--help")
        assert proc.returncode == 0, proc.stderr
    text = bench("compare", "--help").stdout
    for flag in ("--seconds", "--omit-seconds", "--with-iptables", "--cap-bytes-per-sec", "--offered-mbps",
                 "--json-out", "--skip-client", "--skip-standalone", "--rounds"):
        assert flag in text


def test_sysinfo_and_paths_verbs() -> None:
    info = json.loads(bench("sysinfo").stdout)
    assert info["cpu_cores"] >= 1 and info["iperf3"].startswith("iperf 3")
    assert set(info["sysctls"]) >= {"net.ipv4.tcp_rmem", "fs.pipe-max-size", "net.core.somaxconn"}
    rows = json.loads(bench("paths", "--json").stdout)
    assert {r["path"] for r in rows} == set(PATHS)
    assert all(r["available"] or r["reason"] for r in rows)


def test_results_dir_loads_into_pandas(tmp_path: Path) -> None:
    from harness.records.results import to_dataframe

    cfg = parse_config({"name": "t", "kind": "headline", "paths": ["direct"], "rounds": 1, "seconds": 1,
                        "omit_seconds": 0, "backend": "python"})
    run_experiment(cfg, tmp_path / "t.jsonl")
    (rs,) = load_results_dir(tmp_path)
    df = to_dataframe(rs.records)
    assert df.loc[0, "backend"] == "python" and df.loc[0, "throughput_mbps"] > 0
