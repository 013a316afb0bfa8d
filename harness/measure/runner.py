"""Executes a plan: for each measurement, path up -> iperf3 server -> client -> CPU -> record.

Process plumbing and cleanup live here once; paths only start and stop
themselves. Each record is appended (flushed + fsynced) the moment its
measurement ends, so an interrupted run keeps everything it measured.

The run's topology (harness.site.topology: loopback, netns, hosts) is opened
after preflight and closed on every exit path, a signal included: the
client runs on its client executor, the target on its target executor, the
path on the site's edge.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from harness.define.experiment import ExperimentConfig
from harness.define.plan import Measurement, build_plan
from harness.errors import HarnessError, IperfError, PathError, ProbeError
from harness.measure.drivers import driver_for
from harness.measure.preflight import check_paths, check_ports, check_tools, check_topology
from harness.measure.progress import Progress
from harness.measure.signals import Interrupted, SignalGuard
from harness.measure.sysinfo import collect_sysinfo
from harness.paths import PATHS, PathSetup
from harness.paths import iptables as ipt
from harness.paths import nftables as nft
from harness.paths.base import ForwardPath
from harness.records.header import Header, SysInfo, TopologyInfo
from harness.records.results import (
    STATUS_FAILED,
    STATUS_OK,
    Record,
    ResultsError,
    create_results,
    load_results,
    resume_results,
    utc_now,
)
from harness.records.schema import SCHEMA_VERSION
from harness.records.wrk_report import WrkError
from harness.site import procs
from harness.site.executor.base import ExecutorError
from harness.site.netutil import free_port
from harness.site.topology import LoopbackTopology, Topology, open_topology_now

log = logging.getLogger("harness.measure.runner")

# How long a path may take to become ready. The client path starts a server,
# enrolls and pushes a rule before this starts counting; 30 s covers a
# loaded 2-core host with Python start-up times of several seconds.
READY_TIMEOUT_S = 30.0
WORKDIR_PREFIX = "portunus-bench-"


class PortAllocator:
    """Ports for one measurement: kernel-chosen free ones, or base_port, base_port+1, ..."""

    def __init__(self, base_port: int | None) -> None:
        self.base_port = base_port
        self._given: list[int] = []

    def reset(self) -> None:
        self._given = []

    def alloc(self) -> int:
        if self.base_port is not None:
            port = self.base_port + len(self._given)
        else:
            port = free_port()
            while port in self._given:  # bind(0) may hand the same just-released port back
                port = free_port()
        self._given.append(port)
        return port


def measure_one(m: Measurement, cfg: ExperimentConfig, path: ForwardPath, workdir: Path,
                ports: PortAllocator, guard: SignalGuard, topology: Topology | None = None) -> Record:
    """Run one measurement end to end; failures become a failed Record, never an exception.

    What runs through the path (iperf3, or the latency / connrate probe) is
    the experiment kind's driver (harness.measure.drivers). Interrupted (a signal)
    and programming errors propagate, after cleanup. topology None = loopback.
    """
    started = utc_now()
    topo = topology if topology is not None else LoopbackTopology()
    site = topo.site
    workdir.mkdir(parents=True, exist_ok=True)
    ports.reset()
    target_port = ports.alloc()
    driver = driver_for(cfg.kind)
    raw: str | None = None
    pids: tuple[int, ...] = ()
    cpu_s: float | None = None
    host: procs.HostCpu | None = None
    info: dict = {}
    error: str | None = None
    fields: dict | None = None
    try:
        try:
            setup = PathSetup(target_port=target_port, workdir=site.edge.mirror_dir(workdir), alloc_port=ports.alloc,
                              cap_bytes_per_s=m.cap_bytes_per_s, protocol=cfg.protocol, site=site,
                              local_workdir=workdir)
            endpoint = path.start(setup)
            path.ready(READY_TIMEOUT_S)
            info = path.describe()
            with driver.open_target(topo.target, site.target_host, target_port, topo.target.mirror_dir(workdir),
                                    cfg):
                pids = tuple(path.forwarder_pids())
                if path.has_forwarder_process and not pids:
                    raise PathError(f"{m.path}: forwarder process exited before the run")
                # Each pid's whole process tree: workers and per-connection forks count too.
                counted = driver.edge_counters(site.edge, endpoint, pids, cfg)
                before = [site.edge.tree_cpu_seconds(p) for p in pids]
                host0 = site.edge.host_cpu()  # the whole host: kernel paths and softirq too (procs.HostCpu)
                raw = driver.run_client(topo.client, endpoint, cfg, m, topo.client.mirror_dir(workdir))
                host = site.edge.host_cpu() - host0
                after = [site.edge.tree_cpu_seconds(p) for p in pids]
                counted = {k: v - counted[k] for k, v in driver.edge_counters(site.edge, endpoint, pids, cfg).items()
                           if k in counted}
                info = path.describe()  # again, after the traffic: e.g. whether HAProxy really spliced
            if pids:
                deltas = [a - b for a, b in zip(after, before, strict=True) if a is not None and b is not None]
                if len(deltas) != len(pids):
                    raise PathError(f"{m.path}: forwarder process exited during the run")
                cpu_s = sum(deltas)
            fields = driver.record_fields(raw, cpu_s, m, counted)
        finally:
            with guard.deferred():  # a signal here waits until the path is fully down
                path.stop()
    except Exception as e:  # any failure of this measurement is recorded; the run goes on
        error = str(e) if isinstance(e, (PathError, IperfError, ProbeError, WrkError)) else f"{type(e).__name__}: {e}"
        if not isinstance(e, (PathError, IperfError, ProbeError, WrkError, TimeoutError, OSError,
                              subprocess.SubprocessError, HarnessError, ExecutorError)):
            log.exception("measurement %d (%s) failed unexpectedly", m.index, m.path)
    base = dict(
        experiment=cfg.name, path=m.path, round=m.round, index=m.index, offered_mbps=m.offered_mbps,
        cap_bytes_per_s=m.cap_bytes_per_s, seconds=cfg.seconds, omit_seconds=cfg.omit_seconds,
        protocol=cfg.protocol, backend=cfg.backend, started_at=started, ended_at=utc_now(),
        forwarder_pids=pids, path_info=info, driver=driver.name, **{driver.raw_field: raw},
        datagram_bytes=m.datagram_bytes, offered_pps=m.offered_pps, http_mode=m.http_mode,
        response_bytes=m.response_bytes,
    )
    if fields is None:
        return Record(status=STATUS_FAILED, error=error or "unknown failure", **base)  # type: ignore[arg-type]
    host_busy = None if host is None else round(host.busy_s, 4)
    host_soft = None if host is None else round(host.softirq_s, 4)
    return Record(status=STATUS_OK, error=None, forwarder_cpu_s=cpu_s, host_busy_cpu_s=host_busy,
                  host_softirq_s=host_soft, **fields, **base)  # type: ignore[arg-type]


@dataclass
class RunOutcome:
    """What a run did: the file, the records it wrote this time, and whether a signal stopped it."""

    results_path: Path
    records: list[Record] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    interrupted: Interrupted | None = None
    skipped_done: int = 0  # measurements already in the file (--resume)

    @property
    def exit_code(self) -> int:
        return self.interrupted.exit_code if self.interrupted else 0


def run_experiment(cfg: ExperimentConfig, results_path: Path, *, resume: bool = False,
                   skip_unavailable: bool = False, argv: Sequence[str] = (),
                   workdir_root: Path | None = None, keep_workdir: bool = False,
                   progress_stream: TextIO | None = None) -> RunOutcome:
    """Preflight, then run every planned measurement, appending records to results_path.

    Raises HarnessError (PreflightError, ResultsError) before measuring anything.
    """
    check_tools(cfg.backend, driver_for(cfg.kind).tools)
    check_topology(cfg.topology)
    paths, unavailable = check_paths(cfg.paths, skip_unavailable, cfg.topology.kind)
    if not paths:
        raise HarnessError("no path of this experiment can run here; see the reasons above")
    if cfg.topology.kind == "loopback":  # elsewhere the ports are in namespaces / hosts of their own
        check_ports(cfg.base_port, paths)
    plan = build_plan(cfg, exclude_paths=frozenset(unavailable))

    done: set = set()
    resuming = resume and results_path.exists()
    if resuming:
        existing = load_results(results_path)
        if existing.file_schema_version != SCHEMA_VERSION:
            resume_results(results_path)  # raises: an older file is read, not resumed (says why)
        if existing.header.config.to_dict() != cfg.to_dict():
            raise ResultsError(f"{results_path} was started with a different config; "
                               "resume needs the same experiment file (or choose another --out)")
        done = {(r.round, r.path, r.offered_mbps, r.cap_bytes_per_s, r.datagram_bytes, r.http_mode, r.response_bytes)
                for r in existing.records if r.ok}

    guard = SignalGuard()
    guard.install()
    topology: Topology | None = None
    try:
        # Held signals: a Ctrl-C while namespaces are being made waits until they exist (and
        # is then raised), so the finally below always knows what to remove.
        with guard.deferred():
            topology = open_topology_now(cfg.topology)  # removes what it made if it fails half-way
        return _run_plan(cfg, plan, done, results_path, resuming, topology, guard, unavailable,
                         argv, workdir_root, keep_workdir, progress_stream)
    except Interrupted as e:  # before the loop started (topology or header): nothing measured
        return RunOutcome(results_path, unavailable=unavailable, interrupted=e)
    finally:
        try:
            with guard.deferred():
                if topology is not None:
                    topology.close()
        except Interrupted:
            pass  # the run has already stopped; its status is written
        finally:
            guard.restore()


def _run_plan(cfg: ExperimentConfig, plan: Sequence[Measurement], done: set, results_path: Path, resuming: bool,
              topology: Topology, guard: SignalGuard, unavailable: dict[str, str], argv: Sequence[str],
              workdir_root: Path | None, keep_workdir: bool, progress_stream: TextIO | None) -> RunOutcome:
    """The measurement loop over an open topology; the result file gets its run_end on every exit path."""
    if resuming:
        writer, _ = resume_results(results_path, collect_sysinfo())  # who measures from here on
    else:
        header = Header(experiment=cfg.name, kind=cfg.kind, created_at=utc_now(), config=cfg,
                        sysinfo=SysInfo.from_dict(collect_sysinfo()), argv=list(argv), unavailable_paths=unavailable,
                        topology=TopologyInfo.from_dict(topology.describe()),
                        path_facts={p: PATHS[p].facts() for p in cfg.paths})
        writer = create_results(results_path, header)

    todo = [m for m in plan if m.key not in done]
    outcome = RunOutcome(results_path, unavailable=unavailable, skipped_done=len(plan) - len(todo))
    progress = Progress(len(todo), cfg.seconds + cfg.omit_seconds, progress_stream or sys.stderr)
    for name, why in unavailable.items():
        progress.message(f"skipping path {name}: {why}")
    if topology.kind != "loopback":
        progress.message(f"topology {topology.kind}: {_topology_line(topology.describe())}")
    root = Path(tempfile.mkdtemp(prefix=f"{WORKDIR_PREFIX}{os.getpid()}-", dir=workdir_root))
    ports = PortAllocator(cfg.base_port)
    status = "failed"
    try:
        for m in todo:
            progress.start(m)
            # A fresh instance per measurement: paths keep per-run state (processes, chain).
            rec = measure_one(m, cfg, PATHS[m.path](), root / f"{m.index:04d}-{m.path}", ports, guard, topology)
            writer.append(rec)
            outcome.records.append(rec)
            progress.finish(m, rec)
        status = "complete"
    except Interrupted as e:
        outcome.interrupted = e
        status = "interrupted"
        progress.message(f"{e}: stopped cleanly; {len(outcome.records)} measurement(s) kept in {results_path}")
    finally:
        progress.close()
        with guard.deferred():
            _safety_net(frozenset(cfg.paths))
            try:
                writer.end(status, measurements=len(outcome.records))
            finally:
                writer.close()
                if not keep_workdir:
                    shutil.rmtree(root, ignore_errors=True)
    return outcome


def _topology_line(d: dict) -> str:
    """One line naming the namespaces / hosts of a topology description."""
    if d.get("kind") == "netns":
        ns = d.get("namespaces", {})
        return f"{ns.get('client')} -> {ns.get('edge')} -> {ns.get('target')}"
    roles = d.get("roles", {})
    return ", ".join(f"{r}={v.get('name')}" for r, v in roles.items())


def _safety_net(paths: frozenset[str]) -> None:
    """After the loop, whatever happened: no child process and no iptables chain of ours remains here.

    (In a netns topology the edge's rules go with its namespace, removed by the topology's close.)
    """
    procs.stop_all()
    if "iptables" in paths:
        try:
            ipt.remove_chain(ipt.chain_name())
        except PathError:
            pass
    if paths & {"nftables", "nft_flowtable"}:
        try:
            nft.remove_table(nft.table_name())
        except PathError:
            pass

