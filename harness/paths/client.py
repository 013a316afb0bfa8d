"""client: the full control-plane flow, as the spec's perf_compare drives it.

Per measurement, in a fresh data dir D:
  1. D/server.toml (control_listen, operator_http_listen, metrics_listen, operator_token)
  2. `portunus-server --data-dir D serve`, wait until the operator HTTP port accepts
  3. POST /v1/client-enrollments {"name", "address"} (bearer token) -> {"uri"}
  4. `portunus-client enroll URI --out D/bundle.json`
  5. `portunus-client --bundle D/bundle.json` (the forwarder: its CPU is the path's cost)
  6. POST /v1/rules {client, name, protocol, listen_addr, listen_port, target[, rate_limit]}
  7. wait until the rule's listener accepts
`client_capped` is the same with rate_limit.bandwidth_in_bps = the measurement's cap.

Until both executables exist and run, the path reports itself unavailable
with the reason: it never produces a number it did not measure.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from harness import procs
from harness.errors import PathError
from harness.netutil import LOOPBACK
from harness.paths._proc_path import (
    READY_TIMEOUT_S,
    find_executable,
    log_tail,
    stop_all,
    wait_process_accepts,
)
from harness.paths.base import Availability, Endpoint, ForwardPath, PathSetup

SERVER_BIN = "portunus-server"
CLIENT_BIN = "portunus-client"
CLIENT_NAME = "bench"
RULE_NAME = "bench"
HTTP_TIMEOUT_S = 30.0
HELP_TIMEOUT_S = 30.0
ENROLL_TIMEOUT_S = 60.0


def render_server_toml(control_port: int, http_port: int, metrics_port: int, token: str) -> str:
    """D/server.toml for one measurement, everything on loopback."""
    return (
        f'control_listen = "{LOOPBACK}:{control_port}"\n'
        f'operator_http_listen = "{LOOPBACK}:{http_port}"\n'
        f'metrics_listen = "{LOOPBACK}:{metrics_port}"\n'
        f'operator_token = "{token}"\n'
    )


def rule_body(listen_port: int, target_port: int, protocol: str = "tcp",
              cap_bytes_per_s: int | None = None) -> dict[str, Any]:
    """The POST /v1/rules body for one measurement."""
    body: dict[str, Any] = {
        "client": CLIENT_NAME,
        "name": RULE_NAME,
        "protocol": protocol,
        "listen_addr": LOOPBACK,
        "listen_port": listen_port,
        "target": f"{LOOPBACK}:{target_port}",
    }
    if cap_bytes_per_s:
        body["rate_limit"] = {"bandwidth_in_bps": cap_bytes_per_s}
    return body


class HttpError(PathError):
    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


def http_json(method: str, url: str, token: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """One operator-API call; HttpError carries the server's {"error": {"code","message"}}."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json", "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")
        try:
            err = json.loads(text)["error"]
            msg = f"{err.get('code')}: {err.get('message')}"
        except (ValueError, KeyError, TypeError):
            msg = text[:300]
        raise HttpError(e.code, f"{method} {url} -> HTTP {e.code} {msg}") from None
    except (urllib.error.URLError, OSError) as e:
        raise HttpError(0, f"{method} {url} failed: {getattr(e, 'reason', e)}") from None
    return json.loads(raw) if raw.strip() else {}


def _runs_help(binary: str) -> str | None:
    """None if `binary --help` exits 0, else why not."""
    try:
        proc = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=HELP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`{binary} --help` failed: {e}"
    if proc.returncode != 0:
        return f"`{binary} --help` exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-300:]}"
    return None


class ClientPath(ForwardPath):
    name = "client"
    description = "portunus-client fed by portunus-server (enrollment + rule pushed over the operator API)"
    ports_needed = 4  # rule listener, control, operator HTTP, metrics

    def __init__(self) -> None:
        self._server_bin = find_executable(SERVER_BIN)
        self._client_bin = find_executable(CLIENT_BIN)
        self._server: subprocess.Popen | None = None
        self._client: subprocess.Popen | None = None
        self._port: int | None = None
        self._workdir: Path | None = None
        self._rule_id: Any = None

    def available(self) -> Availability:
        for name, path in ((SERVER_BIN, self._server_bin), (CLIENT_BIN, self._client_bin)):
            if path is None:
                return Availability.no(f"{name} is not installed in this venv or on PATH "
                                       "(the control plane is not built yet?)")
            why = _runs_help(path)
            if why is not None:
                return Availability.no(why)
        return Availability.yes()

    def start(self, setup: PathSetup) -> Endpoint:
        if self._server_bin is None or self._client_bin is None:
            raise PathError("portunus-server / portunus-client not installed")
        wd = self._workdir = setup.workdir
        data_dir = wd / "server-data"
        data_dir.mkdir(parents=True, exist_ok=True)
        self._port = setup.alloc_port()
        control, http, metrics = setup.alloc_port(), setup.alloc_port(), setup.alloc_port()
        token = secrets.token_urlsafe(32)
        (data_dir / "server.toml").write_text(render_server_toml(control, http, metrics, token))
        base = f"http://{LOOPBACK}:{http}"

        server_log = wd / "server.log"
        self._server = procs.spawn([self._server_bin, "--data-dir", str(data_dir), "serve"], log_path=server_log)
        wait_process_accepts(self._server, http, READY_TIMEOUT_S, SERVER_BIN, server_log)

        uri = http_json("POST", f"{base}/v1/client-enrollments", token,
                        {"name": CLIENT_NAME, "address": LOOPBACK}).get("uri")
        if not uri:
            raise PathError("POST /v1/client-enrollments returned no uri")
        bundle = wd / "bundle.json"
        enroll = subprocess.run([self._client_bin, "enroll", uri, "--out", str(bundle)],
                                capture_output=True, text=True, timeout=ENROLL_TIMEOUT_S)
        if enroll.returncode != 0:
            raise PathError(f"portunus-client enroll exited {enroll.returncode}: "
                            f"{(enroll.stderr or enroll.stdout).strip()[-800:]}")

        client_log = wd / "client.log"
        self._client = procs.spawn([self._client_bin, "--bundle", str(bundle)], log_path=client_log)
        self._wait_online(base, token)
        self._rule_id = self._push_rule(base, token, rule_body(self._port, setup.target_port, setup.protocol,
                                                  setup.cap_bytes_per_s))
        return Endpoint(LOOPBACK, self._port)

    def _wait_online(self, base: str, token: str) -> None:
        """Poll GET /v1/clients until our client holds its control stream."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        status = None
        while time.monotonic() < deadline:
            if self._client is not None and self._client.poll() is not None:
                raise PathError(f"portunus-client exited with code {self._client.returncode}:\n"
                                f"{log_tail(self._workdir / 'client.log') if self._workdir else ''}")
            clients = http_json("GET", f"{base}/v1/clients", token).get("clients", [])
            status = next((c.get("status") for c in clients if c.get("name") == CLIENT_NAME), None)
            if status == "online":
                return
            time.sleep(0.1)
        raise PathError(f"portunus-client did not come online within {READY_TIMEOUT_S:.0f} s (status {status!r})")

    def _push_rule(self, base: str, token: str, body: dict[str, Any]) -> Any:
        """POST the rule; the server answers once the client acked it Active (201)."""
        try:
            return http_json("POST", f"{base}/v1/rules", token, body).get("id")
        except HttpError as e:
            if e.status != 504:
                raise
            # No ack in the server's ack_timeout_secs: the rule stays pending and the
            # client applies it when it can; ready() waits for the listener.
            return None

    def ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        assert self._client is not None and self._port is not None and self._workdir is not None
        wait_process_accepts(self._client, self._port, timeout_s, CLIENT_BIN, self._workdir / "client.log")

    def stop(self) -> None:
        stop_all(self._client, self._server)

    def forwarder_pids(self) -> list[int]:
        return [self._client.pid] if self._client is not None and self._client.poll() is None else []

    def describe(self) -> dict[str, Any]:
        return {"server_binary": self._server_bin, "client_binary": self._client_bin, "rule_id": self._rule_id}


class ClientCappedPath(ClientPath):
    name = "client_capped"
    description = "client path with a bandwidth cap (rate_limit.bandwidth_in_bps) on the pushed rule"
    capped = True
