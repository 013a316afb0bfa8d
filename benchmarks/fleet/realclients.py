"""Real portunus-client processes: enrolled, started, stopped, and their JSON logs read."""

from __future__ import annotations

import datetime
import json
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.fleet import procstat
from benchmarks.fleet.plane import BIN, Plane, child_env, stop_process
from portunus.control.bundle import dump_bundle
from portunus.control.client import enroll


def parse_log_line(line: str) -> tuple[float, str] | None:
    """(epoch seconds, message) of one --log-format json line, or None for anything else."""
    try:
        rec = json.loads(line)
        ts = datetime.datetime.strptime(rec["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.UTC)
        return ts.timestamp(), str(rec["msg"])
    except (ValueError, KeyError, TypeError):
        return None


@dataclass
class RealClient:
    name: str
    bundle: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    extra_args: list[str] = field(default_factory=list)

    def start(self, pythonpath: str | None = None) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "portunus-client"), "--bundle", str(self.bundle), "--log-format", "json",
                 "--shutdown-drain-secs", "1", *self.extra_args],
                stdout=log, stderr=subprocess.STDOUT, env=child_env(pythonpath))

    def stop(self) -> None:
        p, self.proc = self.proc, None
        stop_process(p)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def events(self, needle: str, since: float = 0.0) -> list[tuple[float, str]]:
        """(time, message) of the log lines containing `needle`, at or after `since` (epoch s)."""
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            ev = parse_log_line(line)
            if ev is not None and ev[0] >= since and needle in ev[1]:
                out.append(ev)
        return out


def enroll_clients(plane: Plane, names: list[str], bundle_dir: Path) -> tuple[list[RealClient], list[float]]:
    """Enroll each name (URI from the API, then the same enroll() `portunus-client enroll` runs): clients and seconds each."""
    bundle_dir.mkdir(parents=True, exist_ok=True)
    clients, took = [], []
    for name in names:
        t0 = time.perf_counter()
        uri = plane.enrollment_uri(name)
        bundle = bundle_dir / f"{name}.bundle.json"
        dump_bundle(bundle, enroll(uri))
        took.append(time.perf_counter() - t0)
        clients.append(RealClient(name, bundle, bundle_dir / f"{name}.log"))
    return clients, took


def sample_clients(clients: list[RealClient], control_port: int) -> dict[str, Any]:
    """RSS, fds and control connections of the running clients (sums and medians)."""
    rss = [procstat.rss_bytes(c.pid) or 0 for c in clients if c.alive()]
    fds = [procstat.fd_count(c.pid) or 0 for c in clients if c.alive()]
    conns = [procstat.established_to(c.pid, control_port) for c in clients if c.alive()]
    cpu = [procstat.cpu_seconds(c.pid) or 0.0 for c in clients if c.alive()]
    rss.sort()
    return {"alive": len(rss), "cpu_s_total": round(sum(cpu), 2), "rss_total_mb": round(sum(rss) / 2**20, 1),
            "rss_median_mb": round(rss[len(rss) // 2] / 2**20, 1) if rss else None,
            "fds_total": sum(fds), "control_connections": sum(conns),
            "control_connections_max_per_client": max(conns) if conns else None}
