"""A ForwardPath around tests/harness/delay_forwarder.py: a path whose added delay is known."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from harness.paths._proc_path import READY_TIMEOUT_S, stop_all, wait_process_accepts
from harness.paths.base import Endpoint, ForwardPath, PathSetup
from harness.site import procs
from harness.site.netutil import LOOPBACK
from tests.harness.delay_forwarder import ACCEPTED

SCRIPT = Path(__file__).with_name("delay_forwarder.py")


class DelayPath(ForwardPath):
    name = "delay"
    description = "test forwarder holding each client->target chunk for delay_ms"

    def __init__(self, delay_ms: float) -> None:
        self.delay_ms = delay_ms
        self._proc: subprocess.Popen | None = None
        self._port: int | None = None
        self._log: Path | None = None

    def start(self, setup: PathSetup) -> Endpoint:
        self._port = setup.alloc_port()
        self._log = setup.workdir / "delay.log"
        self._proc = procs.spawn([sys.executable, str(SCRIPT), str(self._port), str(setup.target_port),
                                  str(self.delay_ms)], log_path=self._log)
        return Endpoint(LOOPBACK, self._port)

    def ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        assert self._proc is not None and self._port is not None and self._log is not None
        wait_process_accepts(self._proc, self._port, timeout_s, "delay_forwarder", self._log)

    def stop(self) -> None:
        stop_all(self._proc)

    def forwarder_pids(self) -> list[int]:
        return [self._proc.pid] if self._proc is not None and self._proc.poll() is None else []

    def accepted(self) -> int:
        """Connections the forwarder accepted so far (its log's lines)."""
        if self._log is None or not self._log.exists():
            return 0
        return self._log.read_text().count(ACCEPTED + "\n")

    def describe(self) -> dict:
        return {"delay_ms": self.delay_ms}
