"""Real portunus-server / portunus-client processes for control-plane tests.

Data dirs live under a temp dir on /tmp (ext4 here; the server refuses tmpfs).
Every process started is stopped by the owning fixture, on success and failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from portunus.control.api_client import ApiResponse, OperatorClient
from portunus.control.bundle import load_bundle
from portunus.control.client import ClientOptions, ControlClient
from portunus.control.lastknown import LastKnown
from portunus.dataplane import Forwarder
from tests.support.net import ExchangeServer, exchange, free_ports, random_payload, wait_port
from tests.support.proc import BIN, run_cli
from tests.support.wait import wait_for

# Starting Python with grpc, aiohttp and cryptography takes ~1 s here; a
# shared, busy 2-core host can take several times that.
START_TIMEOUT_S = 30.0


def control_tmpdir() -> Path:
    """A fresh dir under /tmp (never $TMPDIR, which may be tmpfs elsewhere)."""
    return Path(tempfile.mkdtemp(prefix="portunus-control-", dir="/tmp"))


def wait_until(pred: Any, timeout_s: float = 15.0, what: str = "condition", interval_s: float = 0.05) -> Any:
    """tests.support.wait.wait_for with the control tests' longer default (processes with grpc start slowly)."""
    return wait_for(pred, timeout_s, what, interval_s)


def through(port: int, target: ExchangeServer, tag: bytes, payload_bytes: int = 4096) -> None:
    """One exchange through `port` that must reach `target` intact (tags are 16 bytes)."""
    sent, got = exchange(port, random_payload(payload_bytes, random.Random(tag)), tag, timeout_s=30)
    assert wait_until(lambda: target.results.get(tag), 10, "target result") == (sent, got)


def refused(port: int) -> bool:
    """True if nothing listens on 127.0.0.1:`port`."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True


class Proc:
    """A console script of this venv with its output in a log file."""

    def __init__(self, args: list[str], log_path: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 (lives as long as the process; closed in stop)
        self.proc = subprocess.Popen([str(BIN / args[0]), *args[1:]], stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_log(self, text: str, timeout_s: float = 15.0) -> str:
        wait_until(lambda: text in self.log(), timeout_s, f"{text!r} in {self.log_path.name}")
        return self.log()

    def kill9(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20.0) -> int | None:
        if self.alive():
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode


class ControlPlane:
    """One server data dir (with server.toml), and the processes started on it."""

    def __init__(self, root: Path, *, ack_timeout_secs: float = 10.0, extra_toml: str = "") -> None:
        self.root = root
        self.data_dir = root / "server"
        self.data_dir.mkdir()
        self.token = run_cli("portunus-server", "gen-token").stdout.strip()
        self.control_port, self.http_port, self.metrics_port = free_ports(3)
        self.http_endpoint = f"127.0.0.1:{self.http_port}"
        (self.data_dir / "server.toml").write_text(
            f'control_listen = "127.0.0.1:{self.control_port}"\n'
            f'operator_http_listen = "{self.http_endpoint}"\n'
            f'metrics_listen = "127.0.0.1:{self.metrics_port}"\n'
            f'operator_token = "{self.token}"\n'
            f"ack_timeout_secs = {ack_timeout_secs}\n" + extra_toml)
        (self.data_dir / "server.toml").chmod(0o600)  # it holds an admin token
        self.server: Proc | None = None
        self.procs: list[Proc] = []

    # ------------------------------------------------------------ server

    def start_server(self, env: dict[str, str] | None = None) -> Proc:
        p = Proc(["portunus-server", "--data-dir", str(self.data_dir), "serve"], self.root / "server.log", env)
        self.procs.append(p)
        self.server = p
        try:
            wait_port(self.http_port, timeout_s=START_TIMEOUT_S)
            wait_port(self.control_port, timeout_s=START_TIMEOUT_S)
        except TimeoutError:
            raise AssertionError(f"portunus-server did not start:\n{p.log()}") from None
        return p

    def api(self, token: str | None = None) -> OperatorClient:
        return OperatorClient(self.http_endpoint, self.token if token is None else token)

    def raw(self, method: str, path: str, body: bytes | None = None, token: str | None = None) -> ApiResponse:
        """A request with a body sent byte for byte (JSON that json.dumps would not write)."""
        req = urllib.request.Request(f"http://{self.http_endpoint}{path}", data=body, method=method)
        req.add_header("Authorization", f"Bearer {self.token if token is None else token}")
        if body is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return ApiResponse(resp.status, json.loads(resp.read() or b"null"))
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                return ApiResponse(e.code, json.loads(raw))
            except ValueError:
                return ApiResponse(e.code, raw.decode(errors="replace"))

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            return r.read().decode()

    # ------------------------------------------------------------ clients

    def enrollment_uri(self, name: str) -> str:
        resp = self.api().post("/v1/client-enrollments", {"name": name, "address": "127.0.0.1"})
        assert resp.status == 201, resp
        return resp.body["uri"]

    def enroll(self, name: str) -> Path:
        bundle = self.root / f"{name}.bundle.json"
        r = run_cli("portunus-client", "enroll", self.enrollment_uri(name), "--out", str(bundle))
        assert r.returncode == 0, r.stderr
        return bundle

    def start_client(self, bundle: Path, *, stats_interval_s: float = 0.5,
                     env: dict[str, str] | None = None) -> ClientProc:
        (metrics_port,) = free_ports(1)
        p = ClientProc(["portunus-client", "--bundle", str(bundle), "--stats-report-interval-secs",
                        str(stats_interval_s), "--metrics-addr", f"127.0.0.1:{metrics_port}",
                        "--reconnect-max-secs", "1", "--shutdown-drain-secs", "1"],
                       self.root / f"{bundle.stem}.log", metrics_port, env)
        self.procs.append(p)
        try:
            wait_port(metrics_port, timeout_s=START_TIMEOUT_S)
        except TimeoutError:
            raise AssertionError(f"portunus-client did not start:\n{p.log()}") from None
        return p

    def client_view(self, name: str) -> dict[str, Any]:
        resp = self.api().get("/v1/clients")
        assert resp.status == 200, resp
        return next(c for c in resp.body["clients"] if c["name"] == name)

    def wait_online(self, name: str, timeout_s: float = START_TIMEOUT_S) -> None:
        wait_until(lambda: self.client_view(name)["status"] == "online", timeout_s, f"client {name} online")

    def push(self, client: str, name: str, listen_port: int, target: str, **extra: Any) -> ApiResponse:
        body = {"client": client, "name": name, "listen_addr": "127.0.0.1", "listen_port": listen_port,
                "target": target, **extra}
        return self.api().post("/v1/rules", body)

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop()


class ClientProc(Proc):
    def __init__(self, args: list[str], log_path: Path, metrics_port: int,
                 env: dict[str, str] | None = None) -> None:
        super().__init__(args, log_path, env)
        self.metrics_port = metrics_port

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=10) as r:
            return r.read().decode()

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/stats", timeout=10) as r:
            return json.load(r)


def new_plane(**kw: Any) -> ControlPlane:
    return ControlPlane(control_tmpdir(), **kw)


def remove_plane(plane: ControlPlane) -> None:
    plane.close()
    shutil.rmtree(plane.root, ignore_errors=True)


def new_secret_token() -> str:
    return secrets.token_urlsafe(32)


@contextlib.contextmanager
def in_process_client(bundle_path: Path, options: ClientOptions,
                      last_known_path: Path | None = None) -> Iterator[ControlClient]:
    """A ControlClient on a real Forwarder, its loop in a thread: for tests that look inside the client."""
    bundle = load_bundle(bundle_path)
    fwd = Forwarder()
    last_known = LastKnown(last_known_path, bundle) if last_known_path is not None else None
    control = ControlClient(bundle, fwd, options, last_known=last_known)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    runner = threading.Thread(target=lambda: loop.run_until_complete(control.run(stop)), daemon=True)
    runner.start()
    try:
        yield control
    finally:
        loop.call_soon_threadsafe(stop.set)
        runner.join(30)
        fwd.close()
        if not runner.is_alive():
            loop.close()
    assert not runner.is_alive(), "the client's loop did not stop"
