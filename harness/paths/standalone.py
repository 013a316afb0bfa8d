"""standalone: `portunus-standalone --config F` with one TOML rule (splice fast path by default).

`standalone_copy` is the same with PORTUNUS_DISABLE_SPLICE=1 (userspace copy path), for A/B;
`standalone_w2` the same with `workers = 2` in [global] (two worker processes, SO_REUSEPORT).
It runs on the site's edge, listens on site.listen_host and dials site.target_host.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from harness.errors import PathError
from harness.paths._proc_path import (
    READY_TIMEOUT_S,
    find_executable,
    log_tail,
    stop_all,
    wait_process_accepts,
)
from harness.paths.base import Availability, Endpoint, ForwardPath, PathSetup
from harness.site.executor.base import Executor, Proc
from harness.site.executor.local import LOCAL
from harness.site.netutil import LOOPBACK

BINARY = "portunus-standalone"


def render_standalone_toml(listen_port: int, target_port: int, protocol: str = "tcp",
                           cap_bytes_per_s: int | None = None, listen_host: str = LOOPBACK,
                           target_host: str = LOOPBACK, workers: int | None = None) -> str:
    """The rule file for one measurement. Drain 0 s: the harness stops it after the run.

    protocol "udp" adds a TCP rule on the same port for iperf3's control connection;
    workers None leaves `[global] workers` at Portunus's default.
    """
    rate = f"\nrate_limit = {{ bandwidth_in_bps = {cap_bytes_per_s} }}" if cap_bytes_per_s else ""
    control = ""
    if protocol == "udp":
        control = ("\n[[rule]]\n"
                   'name = "bench_control"\n'
                   'protocol = "tcp"\n'
                   f'listen_addr = "{listen_host}"\n'
                   f"listen_port = {listen_port}\n"
                   f'target = "{target_host}:{target_port}"\n')
    return (
        "[global]\n"
        'label = "bench"\n'
        'log_level = "warning"\n'
        "shutdown_drain_secs = 0\n"
        + (f"workers = {workers}\n" if workers is not None else "")
        + "\n"
        "[[rule]]\n"
        'name = "bench"\n'
        f'protocol = "{protocol}"\n'
        f'listen_addr = "{listen_host}"\n'
        f"listen_port = {listen_port}\n"
        f'target = "{target_host}:{target_port}"'
        f"{rate}\n"
        f"{control}"
    )


class StandalonePath(ForwardPath):
    name = "standalone"
    description = "portunus-standalone, TOML rule, splice fast path (default)"
    ports_needed = 1
    protocols = ("tcp", "udp")
    env_overrides: ClassVar[dict[str, str]] = {}
    workers: ClassVar[int | None] = None  # `[global] workers`; None = Portunus's default

    def __init__(self) -> None:
        self._proc: Proc | None = None
        self._port: int | None = None
        self._host = LOOPBACK
        self._log: Path | None = None
        self._protocol = "tcp"
        self._binary = find_executable(BINARY)
        self._edge: Executor = LOCAL

    def available(self) -> Availability:
        if self._binary is None:
            return Availability.no(f"{BINARY} not found: install the project (pip install -e .) into this venv")
        return Availability.yes()

    def start(self, setup: PathSetup) -> Endpoint:
        edge = self._edge = setup.site.edge
        self._binary = edge.which(BINARY)
        if self._binary is None:
            raise PathError(f"{BINARY} not found on {edge.name}")
        self._port = setup.alloc_port()
        self._host = setup.site.listen_host
        self._protocol = setup.protocol
        cfg = setup.workdir / "standalone.toml"
        edge.write_text(cfg, render_standalone_toml(self._port, setup.target_port, setup.protocol,
                                                    setup.cap_bytes_per_s, setup.site.listen_host,
                                                    setup.site.target_host, self.workers))
        self._log = setup.workdir / "standalone.log"
        env = {**os.environ, **self.env_overrides}
        if not self.env_overrides:
            env.pop("PORTUNUS_DISABLE_SPLICE", None)  # the default path must be the default data plane
        self._proc = edge.spawn([self._binary, "--config", str(cfg)], log_path=self._log, env=env)
        return Endpoint(self._host, self._port)

    def ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        assert self._proc is not None and self._port is not None and self._log is not None
        wait_process_accepts(self._proc, self._port, timeout_s, BINARY, self._log, self._edge, self._host)
        if self._protocol == "udp":
            try:
                self._edge.wait_udp_bound(self._port, [self._proc], timeout_s)
            except TimeoutError as e:
                raise PathError(f"{BINARY}: {e}. Log {self._log}:\n{log_tail(self._log, ex=self._edge)}") from None

    def stop(self) -> None:
        # Worker processes (workers = N) may still be exiting when the supervisor is gone: note them
        # first, then wait for them (SIGKILL after the grace), so no forwarder outlives the measurement.
        try:
            workers = self._edge.descendants(self._proc.pid) if self._proc is not None else []
        except Exception:  # e.g. the SSH connection is gone: still stop what we hold
            workers = []
        stop_all(self._proc)
        if workers:
            self._edge.stop_pids(workers)

    def forwarder_pids(self) -> list[int]:
        return [self._proc.pid] if self._proc is not None and self._proc.poll() is None else []

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {"binary": self._binary, "env": dict(self.env_overrides)}
        if self.workers is not None:
            info["workers"] = self.workers
        return info


class StandaloneCappedPath(StandalonePath):
    name = "standalone_capped"
    description = "standalone path with a bandwidth cap (rate_limit.bandwidth_in_bps) on the TOML rule"
    capped = True


class StandaloneCopyPath(StandalonePath):
    name = "standalone_copy"
    description = "portunus-standalone with PORTUNUS_DISABLE_SPLICE=1 (userspace copy path)"
    env_overrides: ClassVar[dict[str, str]] = {"PORTUNUS_DISABLE_SPLICE": "1"}


class StandaloneTwoWorkersPath(StandalonePath):
    name = "standalone_w2"
    description = "portunus-standalone with `workers = 2` (two event-loop processes sharing the listener)"
    workers = 2
