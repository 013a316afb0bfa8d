"""Every registered path measures a real, non-zero rate through the real runner; rules and processes go away."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.define.load import parse_config
from harness.define.plan import Measurement
from harness.measure.runner import PortAllocator, measure_one
from harness.measure.signals import SignalGuard
from harness.paths import PATHS, ForwardPath, PathSetup
from harness.paths import iptables as ipt
from harness.paths.client import ClientPath
from harness.paths.reference import build_csplice
from harness.paths.standalone import render_standalone_toml
from tests.harness.conftest import nat_rules

CAP_BYTES_PER_S = 10 * 1024 * 1024  # 10 MiB/s: fast enough that 2 s carry plenty of bytes


def _cfg(path: str):
    capped = PATHS[path].capped
    return parse_config({"name": "t", "kind": "headline", "paths": [path], "rounds": 1, "seconds": 2,
                         "omit_seconds": 0, **({"caps_bytes_per_s": [CAP_BYTES_PER_S]} if capped else {})})


@pytest.mark.parametrize("name", list(PATHS))
def test_path_measures_a_nonzero_rate(name: str, tmp_path: Path) -> None:
    path = PATHS[name]()
    on_loopback = path.available_on("loopback")
    if not on_loopback.ok:
        # A forwarded-topology path (nft_flowtable): measured in test_topology_paths.py; here it must say why.
        assert "loopback" in on_loopback.reason and "netns" in on_loopback.reason
        return
    av = path.available()
    if name.startswith("client") and not av.ok:
        # The control plane may not be built in this checkout: then the path must say why.
        assert av.reason
        return
    assert av.ok, av.reason
    path.prepare()
    cfg = _cfg(name)
    m = Measurement(0, 1, name, None, CAP_BYTES_PER_S if path.capped else None)
    rec = measure_one(m, cfg, path, tmp_path / "w", PortAllocator(None), SignalGuard())
    assert rec.ok, rec.error
    assert rec.throughput_mbps and rec.throughput_mbps > 0 and rec.receiver_mbps and rec.receiver_mbps > 0
    assert rec.iperf_raw and '"end"' in rec.iperf_raw
    # The whole host's busy CPU over the run, kernel paths included: at least the endpoints' and forwarder's.
    # /proc/stat books by 10 ms tick per core and the forwarder's clock is exact: a light (capped) run can be
    # booked a few ticks low (CI: 0.02 s host vs 0.044 s forwarder), hence 10 ticks of slack.
    assert rec.host_busy_cpu_s is not None
    assert rec.host_busy_cpu_s >= (rec.forwarder_cpu_s or 0.0) * 0.9 - 0.1
    assert rec.host_softirq_s is not None and 0 <= rec.host_softirq_s <= rec.host_busy_cpu_s
    if path.has_forwarder_process:
        assert rec.forwarder_pids and rec.forwarder_cpu_s is not None and rec.forwarder_cpu_s >= 0
        assert rec.cpu_s_per_gb is not None
        for pid in rec.forwarder_pids:
            assert not os.path.exists(f"/proc/{pid}") or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1][:3]
    else:
        assert rec.forwarder_cpu_s is None and rec.cpu_s_per_gb is None
    if path.capped:
        # Receiver side, 2 s including the first second's burst: within a factor of 2 of the cap.
        assert 0.5 < rec.receiver_mbps / (CAP_BYTES_PER_S * 8 / 1e6) < 2.0, rec.receiver_mbps
    if name == "iptables":
        assert rec.path_info["chain"] == ipt.chain_name()
        assert ipt.chain_name() not in nat_rules()


class _BrokenPath(ForwardPath):
    name = "broken"
    description = "fails after half-starting"

    def __init__(self) -> None:
        self.stopped = False

    def start(self, setup: PathSetup):
        raise ipt.PathError("cannot start: simulated")

    def stop(self) -> None:
        self.stopped = True


def test_a_failing_path_gives_a_failed_record_and_is_stopped(tmp_path: Path) -> None:
    path = _BrokenPath()
    rec = measure_one(Measurement(0, 1, "direct"), _cfg("direct"), path, tmp_path, PortAllocator(None), SignalGuard())
    assert not rec.ok and rec.error == "cannot start: simulated" and path.stopped


def test_iptables_rule_is_removed_when_the_measurement_fails(tmp_path: Path) -> None:
    """Start the chain, then the measurement fails (no iperf3 can reach a closed target): chain gone."""
    path = PATHS["iptables"]()
    cfg = parse_config({"name": "t", "kind": "headline", "paths": ["iptables"], "rounds": 1, "seconds": 1,
                        "omit_seconds": 0, "backend": "python"})
    original_ready = path.ready

    def ready_then_break(timeout_s: float) -> None:
        original_ready(timeout_s)
        assert ipt.chain_name() in nat_rules()  # the rule really was there
        raise ipt.PathError("simulated failure after the rule went in")

    path.ready = ready_then_break  # type: ignore[method-assign]
    rec = measure_one(Measurement(0, 1, "iptables"), cfg, path, tmp_path, PortAllocator(None), SignalGuard())
    assert not rec.ok and "simulated" in (rec.error or "")
    assert ipt.chain_name() not in nat_rules()


def test_cleanup_removes_chains_of_dead_harnesses_only() -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_chain = ipt.chain_name(int(dead.stdout))
    live_chain = ipt.chain_name(1)  # pid 1 is alive: a "running harness"
    try:
        for c in (dead_chain, live_chain):
            ipt.ensure_chain(c)
            ipt._ipt("-A", c, *ipt.redirect_rule(1, 2))
        assert {c.name for c in ipt.list_bench_chains()} >= {dead_chain, live_chain}
        removed = ipt.cleanup_leftovers()
        assert dead_chain in removed and live_chain not in removed
        # By exact chain name: PORTUNUS-BENCH-1 is a prefix of other harnesses' chains.
        chains = {c.name for c in ipt.list_bench_chains()}
        assert dead_chain not in chains and live_chain in chains
        # --pid, not --all: --all would also remove the chains and scratch dirs of other harnesses running here.
        proc = subprocess.run([sys.executable, "-m", "harness", "cleanup", "--pid", "1"], capture_output=True,
                              text=True)
        assert proc.returncode == 0 and live_chain in proc.stdout
        assert live_chain not in {c.name for c in ipt.list_bench_chains()}
    finally:
        ipt.remove_chain(dead_chain)
        ipt.remove_chain(live_chain)


def test_cleanup_pid_removes_only_that_harness_s_scratch_dirs() -> None:
    """`cleanup --pid` leaves the scratch dirs of every other harness, running or dead, alone."""
    import shutil
    import tempfile

    from harness.measure.runner import WORKDIR_PREFIX

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    mine = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}1-"))  # "harness" pid 1, alive
    live = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-"))  # a running harness: this one
    other_dead = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{int(dead.stdout)}-"))
    try:
        proc = subprocess.run([sys.executable, "-m", "harness", "cleanup", "--pid", "1"], capture_output=True,
                              text=True)
        assert proc.returncode == 0, proc.stderr
        assert not mine.exists() and live.is_dir() and other_dead.is_dir()
        assert "scratch directories: removed 1" in proc.stdout
    finally:
        for d in (mine, live, other_dead):
            shutil.rmtree(d, ignore_errors=True)


def test_parse_bench_chains() -> None:
    save = "*nat\n:OUTPUT ACCEPT [0:0]\n:PORTUNUS-BENCH-123 - [0:0]\n:OTHER - [0:0]\n-A OUTPUT -j PORTUNUS-BENCH-123\n"
    assert ipt.parse_bench_chains(save) == [ipt.BenchChain("PORTUNUS-BENCH-123", 123)]


def test_iptables_unavailable_without_root() -> None:
    """A real non-root process (setuid in a fork) is told it needs root, and how to fix it."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(r)
            os.setgid(65534)
            os.setuid(65534)
            av = ipt.iptables_available()
            os.write(w, f"{av.ok}|{av.reason}".encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    os.waitpid(pid, 0)
    ok, reason = out.split("|", 1)
    assert ok == "False" and "root" in reason and "sudo" in reason


def test_client_path_unavailable_when_its_executables_do_not_run(tmp_path: Path) -> None:
    path = ClientPath()
    path._server_bin = None
    av = path.available()
    assert not av.ok and "portunus-server is not installed" in av.reason
    path = ClientPath()
    path._client_bin = "/bin/false"  # exists, but `--help` fails
    av = path.available()
    assert not av.ok and "--help" in av.reason


def test_standalone_toml_is_valid_for_the_forwarder(tmp_path: Path) -> None:
    from portunus.config import load_config

    f = tmp_path / "r.toml"
    f.write_text(render_standalone_toml(9000, 9001, cap_bytes_per_s=65536))
    cfg = load_config(f)
    assert cfg.rules[0].rate_limit.bandwidth_in_bps == 65536


def test_csplice_build_is_cached(tmp_path: Path) -> None:
    a = build_csplice(out_dir=tmp_path)
    mtime = a.stat().st_mtime_ns
    assert build_csplice(out_dir=tmp_path) == a and a.stat().st_mtime_ns == mtime
