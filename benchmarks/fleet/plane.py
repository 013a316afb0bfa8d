"""The server side of a fleet run: a real portunus-server on a data dir under /tmp, and its API."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.fleet import procstat
from portunus.control.api_client import OperatorClient

BIN = Path(sys.executable).parent
# Listen ports of pushed rules come from below the kernel's ephemeral range
# (32768-60999), so other programs' outgoing connections do not take them.
RULE_PORT_BASE = 20000
RULE_PORT_END = 32768
# Generous: a restart competes for 2 cores with thousands of simulated clients dialing it.
START_TIMEOUT_S = 300.0
STOP_TIMEOUT_S = 30.0


def free_port_block(n: int, start: int = RULE_PORT_BASE, end: int = RULE_PORT_END) -> list[int]:
    """`n` ports in [start, end) that 127.0.0.1 can bind right now."""
    ports: list[int] = []
    p = start
    while len(ports) < n and p < end:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", p))
                ports.append(p)
            except OSError:
                pass
        p += 1
    if len(ports) < n:
        raise RuntimeError(f"only {len(ports)} free ports between {start} and {end - 1}, {n} needed")
    return ports


def wait_for(pred: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.05) -> Any:
    """Poll `pred` until it is truthy (return it) or `timeout_s` passes (TimeoutError naming `what`)."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def child_env(pythonpath: str | None) -> dict[str, str]:
    """The environment of processes we start (PYTHONPATH first: run another checkout's code)."""
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return env


def stop_process(p: subprocess.Popen[bytes] | None, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """SIGTERM a process we started and reap it (SIGKILL after `timeout_s`); nothing if it is gone."""
    if p is None or p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(timeout_s)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


class Plane:
    """One portunus-server data dir; the server can be stopped and started again on it."""

    def __init__(self, root: Path, *, pythonpath: str | None = None, ack_timeout_s: float = 60.0) -> None:
        self.root = root
        self.data = root / "server"
        self.data.mkdir(parents=True)
        self.pythonpath = pythonpath
        self.token = secrets.token_urlsafe(32)
        self.control_port, http_port, metrics_port = free_port_block(3, start=RULE_PORT_BASE - 1000,
                                                                     end=RULE_PORT_BASE)
        self.http = f"127.0.0.1:{http_port}"
        self.endpoint = f"127.0.0.1:{self.control_port}"
        toml = self.data / "server.toml"
        toml.write_text(f'control_listen = "{self.endpoint}"\noperator_http_listen = "{self.http}"\n'
                        f'metrics_listen = "127.0.0.1:{metrics_port}"\noperator_token = "{self.token}"\n'
                        f'ack_timeout_secs = {ack_timeout_s}\nlog_level = "warning"\n')
        toml.chmod(0o600)
        self.api = OperatorClient(self.http, self.token, timeout_s=120.0)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.start_s: list[float] = []  # from spawning the server to its control port accepting, per start

    # ------------------------------------------------------------ process

    def start(self) -> float:
        """Start the server; return the time (epoch s) its control port first accepted a connection."""
        self.starts += 1
        spawned = time.time()
        with open(self.root / "server.log", "ab") as log:
            log.write(f"--- start {self.starts} ---\n".encode())
            log.flush()
            self.proc = subprocess.Popen([str(BIN / "portunus-server"), "--data-dir", str(self.data), "serve"],
                                         stdout=log, stderr=subprocess.STDOUT, env=child_env(self.pythonpath))
        wait_for(lambda: self.proc is not None and (self.proc.poll() is not None or accepts(self.control_port)),
                 START_TIMEOUT_S, "portunus-server to accept control connections", 0.01)
        back = time.time()
        self.start_s.append(round(back - spawned, 3))
        if self.proc.poll() is not None:
            raise RuntimeError(f"portunus-server exited with {self.proc.returncode}; see {self.root}/server.log")
        wait_for(lambda: accepts(int(self.http.rsplit(":", 1)[1])), START_TIMEOUT_S, "operator API", 0.01)
        return back

    def stop(self) -> None:
        """SIGTERM and wait (SIGKILL after STOP_TIMEOUT_S)."""
        p, self.proc = self.proc, None
        stop_process(p)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def sample(self) -> dict[str, Any]:
        """The server process now: RSS, CPU seconds used so far, open fds."""
        pid = self.pid
        rss = procstat.rss_bytes(pid)
        return {"t": time.time(), "rss_mb": round(rss / 2**20, 1) if rss else None,
                "cpu_s": procstat.cpu_seconds(pid), "fds": procstat.fd_count(pid)}

    # ------------------------------------------------------------ API

    def enrollment_uri(self, name: str) -> str:
        resp = self.api.post("/v1/client-enrollments", {"name": name, "address": "127.0.0.1"})
        if resp.status != 201:
            raise RuntimeError(f"enrollment URI for {name}: {resp.describe_error()}")
        return str(resp.body["uri"])

    def clients(self) -> list[dict[str, Any]]:
        """Every client view, page by page."""
        out: list[dict[str, Any]] = []
        after = 0
        while True:
            resp = self.api.get(f"/v1/clients?limit=1000&after={after}")
            if resp.status != 200:
                raise RuntimeError(f"GET /v1/clients: {resp.describe_error()}")
            out.extend(resp.body["clients"])
            if resp.body.get("next_after") is None:
                return out
            after = resp.body["next_after"]

    def synced(self, names: set[str]) -> set[str]:
        """Which of `names` are online and have acked the server's current rule-set version."""
        return {c["name"] for c in self.clients() if c["name"] in names and c["status"] == "online"
                and c["acked_version"] == c["ruleset_version"]}

    def push(self, client: str, name: str, port: int, target: str, *, wait: bool = True) -> tuple[float, int, Any]:
        """POST one rule: (seconds, HTTP status, body)."""
        body = {"client": client, "name": name, "listen_addr": "127.0.0.1", "listen_port": port, "target": target}
        t0 = time.perf_counter()
        resp = self.api.post("/v1/rules" + ("" if wait else "?wait=false"), body)
        return time.perf_counter() - t0, resp.status, resp.body
