"""Start real portunus processes for integration tests, and always stop them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

BIN = Path(sys.executable).parent


class Standalone:
    """A `portunus-standalone` subprocess running a TOML file we wrote."""

    def __init__(self, tmp: Path, toml: str, *, env: dict[str, str] | None = None,
                 metrics_addr: str | None = None, wait_ports: list[int] | None = None,
                 name: str = "rules.toml", program: list[str] | None = None) -> None:
        """`program`: argv prefix to run instead of portunus-standalone (a benchmark
        variant taking the same flags); `--config FILE` is appended."""
        self.path = tmp / name
        self.path.write_text(toml)
        self.log_path = tmp / (name + ".log")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop())
        cmd = [*(program or [str(BIN / "portunus-standalone")]), "--config", str(self.path)]
        if metrics_addr:
            cmd += ["--metrics-addr", metrics_addr]
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})
        if wait_ports is not None:
            self.wait_ready()

    def wait_ready(self, timeout_s: float = 15.0) -> None:
        """Wait for the startup log line, printed once every listener is bound.
        (No probe connection: it would count as a connection and reach the target.)"""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if "running " in self.log():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise AssertionError(f"portunus-standalone did not start:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def send_signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def reload(self, toml: str) -> None:
        self.path.write_text(toml)
        self.send_signal(signal.SIGHUP)

    def wait_log(self, text: str, timeout_s: float = 10.0) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            out = self.log()
            if text in out:
                return out
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not in log:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def run_cli(*args: str, input: str | None = None, timeout_s: float = 30.0,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a console script of this venv (e.g. 'portunus-standalone', '--check')."""
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, input=input,
                          timeout=timeout_s, env={**os.environ, **(env or {})})


def stats_of(metrics_addr: str) -> dict:
    """`portunus-standalone stats --once` against a running forwarder's metrics address, parsed."""
    r = run_cli("portunus-standalone", "stats", "--once", "--metrics-addr", metrics_addr)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def scrape(metrics_addr: str) -> str:
    """The Prometheus text a forwarder serves at http://METRICS_ADDR/metrics."""
    with urllib.request.urlopen(f"http://{metrics_addr}/metrics", timeout=10) as resp:
        return resp.read().decode()
