"""Simulated clients: many real control streams per process, without a data plane.

Each simulated client is the real `ControlClient` (one TLS gRPC channel, the
challenge/hello proof with its own Ed25519 key, signed rule sets verified and
applied to a RuleBook, acks, stats reports, backoff and fast return) on a
`RecordingPlane` that takes the rule list and opens no socket. Each client's
channel gets its own connection (a local subchannel pool), as separate
processes would.

A worker process (`python -m benchmarks.fleet.sim`) enrolls the URIs it is
given, then obeys one command per stdin line and answers with one JSON line
on stdout:

    connect   start every client                 -> {"ev": "connecting", "t"}
    report    state of every client              -> {"ev": "report", "clients": {...}, "rss_mb", ...}
    stop      stop them all and exit             -> {"ev": "stopped"}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.fleet import procstat
from benchmarks.fleet.plane import child_env
from portunus.config import Owner, Rule
from portunus.control.client import ClientOptions, ControlClient, enroll
from portunus.dataplane.stats import RuleStats

LOCAL_SUBCHANNELS = (("grpc.use_local_subchannel_pool", 1),)
WORKER_TIMEOUT_S = 600.0


class RecordingPlane:
    """A data plane that keeps the rule list it is given and forwards nothing."""

    splice_enabled = False

    def __init__(self) -> None:
        self.rules: list[Rule] = []
        self._zero = RuleStats().snapshot()

    def apply(self, rules: Sequence[Rule], owners: Sequence[Owner] = (), *,
              atomic: bool = True) -> dict[str, str | None]:
        self.rules = list(rules)
        return {r.name: None for r in rules}

    def apply_changes(self, upsert: Sequence[Rule], remove: Sequence[str],
                      owners: Sequence[Owner] = ()) -> dict[str, str | None]:
        gone = {*remove, *(r.name for r in upsert)}
        self.rules = [r for r in self.rules if r.name not in gone] + list(upsert)
        return {r.name: None for r in upsert}

    def snapshot(self) -> dict[str, Any]:
        return {"rules": {r.name: dict(self._zero) for r in self.rules}, "splice_enabled": False}

    def active_connections(self) -> int:
        return 0

    def close(self, drain_s: float = 0.0) -> None:
        pass


class SimClient(ControlClient):
    """ControlClient that notes when each rule set was applied and acked (epoch s, version)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.synced: list[tuple[float, int]] = []

    async def _on_ruleset(self, call: Any, signed: dict[str, Any]) -> None:
        await super()._on_ruleset(call, signed)
        self.synced.append((time.time(), self.book.version))


# ------------------------------------------------------------------ worker process


def _emit(msg: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(msg, separators=(",", ":")) + "\n")
    sys.stdout.flush()


async def _serve(clients: list[SimClient], control_port: int) -> None:
    loop = asyncio.get_running_loop()
    commands: asyncio.Queue[str] = asyncio.Queue()

    def read_stdin() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(commands.put_nowait, line.strip())
        loop.call_soon_threadsafe(commands.put_nowait, "stop")

    threading.Thread(target=read_stdin, daemon=True).start()
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    while True:
        cmd = await commands.get()
        if cmd == "connect" and not tasks:
            tasks = [asyncio.create_task(c.run(stop)) for c in clients]
            _emit({"ev": "connecting", "t": time.time()})
        elif cmd == "report":
            pid = os.getpid()
            rss = procstat.rss_bytes(pid) or 0
            _emit({"ev": "report", "t": time.time(), "rss_mb": round(rss / 2**20, 1),
                   "cpu_s": procstat.cpu_seconds(pid), "fds": procstat.fd_count(pid),
                   "control_connections": procstat.established_to(pid, control_port),
                   "clients": {c.bundle.client: {"sessions": c.sessions, "connected": c.connected,
                                                 "version": c.book.version, "synced": c.synced}
                               for c in clients}})
        elif cmd == "stop":
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            _emit({"ev": "stopped"})
            return


def worker_main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.fleet.sim")
    ap.add_argument("--uris", required=True, help="JSON file: [[name, enrollment URI], ...]")
    ap.add_argument("--control-port", type=int, required=True)
    ap.add_argument("--stats-interval-s", type=float, default=5.0)
    ap.add_argument("--log-level", default="info", help="of the clients' log lines (to the worker's log file)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    uris = json.loads(Path(args.uris).read_text())
    bundles, took = [], []
    for name, uri in uris:
        t0 = time.perf_counter()
        try:
            bundles.append(enroll(uri))
        except Exception as e:  # report and go on: the orchestrator counts enrolled clients
            _emit({"ev": "enroll_failed", "client": name, "error": str(e)})
            continue
        took.append(time.perf_counter() - t0)
    _emit({"ev": "enrolled", "n": len(bundles), "enroll_s": took})
    options = ClientOptions(stats_interval_s=args.stats_interval_s, channel_options=LOCAL_SUBCHANNELS)
    clients = [SimClient(b, RecordingPlane(), options) for b in bundles]  # type: ignore[arg-type]
    asyncio.run(_serve(clients, args.control_port))
    return 0


# ------------------------------------------------------------------ orchestrator side


class SimWorker:
    """One worker process seen from the orchestrator: send a command, read its JSON answer."""

    def __init__(self, uris: list[tuple[str, str]], uri_file: Path, control_port: int, log_path: Path,
                 pythonpath: str | None = None) -> None:
        uri_file.write_text(json.dumps(uris))
        self.names = [n for n, _ in uris]
        self._log = open(log_path, "ab")  # noqa: SIM115 (closed in close())
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.fleet.sim", "--uris", str(uri_file),
                                      "--control-port", str(control_port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log,
                                     env=child_env(pythonpath), cwd=Path(__file__).resolve().parents[2])
        self.enroll_failures: list[dict[str, Any]] = []
        self._lines: queue.Queue[bytes] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(b"")  # EOF

    def read(self, ev: str, timeout_s: float = WORKER_TIMEOUT_S) -> dict[str, Any]:
        """The next answer of kind `ev` (enroll failures are kept aside)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"simulation worker {self.proc.pid}: no {ev} within {timeout_s:g} s") from None
            if not line:
                raise RuntimeError(f"simulation worker {self.proc.pid} exited ({self.proc.poll()}); see its log")
            msg = json.loads(line)
            if msg.get("ev") == "enroll_failed":
                self.enroll_failures.append(msg)
            elif msg.get("ev") == ev:
                return dict(msg)

    def send(self, cmd: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(cmd.encode() + b"\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send("stop")
                self.read("stopped", 60)
            except (OSError, RuntimeError, TimeoutError, ValueError):
                pass
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def report_all(workers: list[SimWorker]) -> list[dict[str, Any]]:
    """Ask every worker for its report (all at once, then read the answers)."""
    for w in workers:
        w.send("report")
    return [w.read("report", 120) for w in workers]


if __name__ == "__main__":
    sys.exit(worker_main())
