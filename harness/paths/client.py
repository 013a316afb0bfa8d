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

Placement: portunus-client (the forwarder) runs on the site's edge;
portunus-server on the site's control executor (topology `control:`, default
the edge), listening for the client on site.control_host and for the operator
API on its own 127.0.0.1, which the harness reaches through that executor's
connect() (inside the namespace, or through an SSH port forward).

Until both executables exist and run, the path reports itself unavailable
with the reason: it never produces a number it did not measure.
"""

from __future__ import annotations

import http.client
import json
import secrets
import socket
import subprocess
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.errors import PathError
from harness.paths._proc_path import (
    READY_TIMEOUT_S,
    find_executable,
    log_tail,
    stop_all,
    wait_process_accepts,
)
from harness.paths.base import Availability, Endpoint, ForwardPath, PathSetup
from harness.site.executor.base import Executor, ExecutorError, Proc
from harness.site.executor.local import LOCAL
from harness.site.netutil import LOOPBACK

SERVER_BIN = "portunus-server"
CLIENT_BIN = "portunus-client"
CLIENT_NAME = "bench"
RULE_NAME = "bench"
HTTP_TIMEOUT_S = 30.0
HELP_TIMEOUT_S = 30.0
ENROLL_TIMEOUT_S = 60.0


def render_server_toml(control_port: int, http_port: int, metrics_port: int, token: str,
                       control_host: str = LOOPBACK) -> str:
    """D/server.toml for one measurement: control listener where the edge reaches it, the rest on loopback."""
    return (
        f'control_listen = "{control_host}:{control_port}"\n'
        f'operator_http_listen = "{LOOPBACK}:{http_port}"\n'
        f'metrics_listen = "{LOOPBACK}:{metrics_port}"\n'
        f'operator_token = "{token}"\n'
    )


def rule_body(listen_port: int, target_port: int, protocol: str = "tcp",
              cap_bytes_per_s: int | None = None, listen_host: str = LOOPBACK,
              target_host: str = LOOPBACK) -> dict[str, Any]:
    """The POST /v1/rules body for one measurement."""
    body: dict[str, Any] = {
        "client": CLIENT_NAME,
        "name": RULE_NAME,
        "protocol": protocol,
        "listen_addr": listen_host,
        "listen_port": listen_port,
        "target": f"{target_host}:{target_port}",
    }
    if cap_bytes_per_s:
        body["rate_limit"] = {"bandwidth_in_bps": cap_bytes_per_s}
    return body


class HttpError(PathError):
    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(message)


Connector = Callable[[str, int, float], socket.socket]


class _Connection(http.client.HTTPConnection):
    """HTTP over a socket a connector opens (e.g. inside a namespace, or through an SSH forward)."""

    def __init__(self, host: str, port: int, connector: Connector, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._connector = connector
        self._timeout_s = timeout  # HTTPConnection.timeout may be None; ours never is

    def connect(self) -> None:
        self.sock = self._connector(self.host, self.port, self._timeout_s)


def http_json(method: str, url: str, token: str, body: dict[str, Any] | None = None,
              connect: Connector | None = None) -> dict[str, Any]:
    """One operator-API call; HttpError carries the server's {"error": {"code","message"}}.

    connect(host, port, timeout_s) opens the TCP connection (default: from the harness's own network).
    """
    u = urllib.parse.urlsplit(url)
    host, port = u.hostname or LOOPBACK, u.port or 80
    data = json.dumps(body).encode() if body is not None else None
    conn = _Connection(host, port, connect or LOCAL.connect, HTTP_TIMEOUT_S)
    try:
        conn.request(method, u.path or "/", body=data, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json", "Accept": "application/json"})
        resp = conn.getresponse()
        raw = resp.read()
    except (OSError, http.client.HTTPException, ExecutorError) as e:
        raise HttpError(0, f"{method} {url} failed: {e}") from None
    finally:
        conn.close()
    if resp.status >= 400:
        text = raw.decode(errors="replace")
        try:
            err = json.loads(text)["error"]
            msg = f"{err.get('code')}: {err.get('message')}"
        except (ValueError, KeyError, TypeError):
            msg = text[:300]
        raise HttpError(resp.status, f"{method} {url} -> HTTP {resp.status} {msg}")
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
        self._server: Proc | None = None
        self._client: Proc | None = None
        self._port: int | None = None
        self._host = LOOPBACK
        self._workdir: Path | None = None
        self._rule_id: Any = None
        self._edge: Executor = LOCAL
        self._control: Executor = LOCAL
        self._connect: Connector = LOCAL.connect

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
        site = setup.site
        edge, control = self._edge, self._control = site.edge, site.control
        self._server_bin, self._client_bin = control.which(SERVER_BIN), edge.which(CLIENT_BIN)
        if self._server_bin is None or self._client_bin is None:
            raise PathError(f"portunus-server ({control.name}) / portunus-client ({edge.name}) not installed")
        wd = self._workdir = setup.workdir
        cwd = setup.workdir_on(control)
        data_dir = cwd / "server-data"
        self._port = setup.alloc_port()
        self._host = site.listen_host
        control_port, http, metrics = setup.alloc_port(), setup.alloc_port(), setup.alloc_port()
        token = secrets.token_urlsafe(32)
        control.write_text(data_dir / "server.toml",
                           render_server_toml(control_port, http, metrics, token, site.control_host),
                           private=True)  # it holds the operator token
        base = f"http://{LOOPBACK}:{http}"
        self._connect = control.connect

        server_log = cwd / "server.log"
        self._server = control.spawn([self._server_bin, "--data-dir", str(data_dir), "serve"], log_path=server_log)
        wait_process_accepts(self._server, http, READY_TIMEOUT_S, SERVER_BIN, server_log, control)

        uri = self._http("POST", f"{base}/v1/client-enrollments", token,
                         {"name": CLIENT_NAME, "address": site.listen_host}).get("uri")
        if not uri:
            raise PathError("POST /v1/client-enrollments returned no uri")
        bundle = wd / "bundle.json"
        enroll = edge.run([self._client_bin, "enroll", uri, "--out", str(bundle)], timeout_s=ENROLL_TIMEOUT_S)
        if not enroll.ok:
            raise PathError(f"portunus-client enroll exited {enroll.returncode}: {enroll.why()}")

        client_log = wd / "client.log"
        self._client = edge.spawn([self._client_bin, "--bundle", str(bundle)], log_path=client_log)
        self._wait_online(base, token)
        self._rule_id = self._push_rule(base, token, rule_body(self._port, setup.target_port, setup.protocol,
                                                               setup.cap_bytes_per_s, site.listen_host,
                                                               site.target_host))
        return Endpoint(self._host, self._port)

    def _http(self, method: str, url: str, token: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        return http_json(method, url, token, body, connect=self._connect)

    def _wait_online(self, base: str, token: str) -> None:
        """Poll GET /v1/clients until our client holds its control stream."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        status = None
        while time.monotonic() < deadline:
            if self._client is not None and self._client.poll() is not None:
                raise PathError(f"portunus-client exited with code {self._client.returncode}:\n"
                                f"{log_tail(self._workdir / 'client.log', ex=self._edge) if self._workdir else ''}")
            clients = self._http("GET", f"{base}/v1/clients", token).get("clients", [])
            status = next((c.get("status") for c in clients if c.get("name") == CLIENT_NAME), None)
            if status == "online":
                return
            time.sleep(0.1)
        raise PathError(f"portunus-client did not come online within {READY_TIMEOUT_S:.0f} s (status {status!r})")

    def _push_rule(self, base: str, token: str, body: dict[str, Any]) -> Any:
        """POST the rule; the server answers once the client acked it Active (201)."""
        try:
            return self._http("POST", f"{base}/v1/rules", token, body).get("id")
        except HttpError as e:
            if e.status != 504:
                raise
            # No ack in the server's ack_timeout_secs: the rule stays pending and the
            # client applies it when it can; ready() waits for the listener.
            return None

    def ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        assert self._client is not None and self._port is not None and self._workdir is not None
        wait_process_accepts(self._client, self._port, timeout_s, CLIENT_BIN, self._workdir / "client.log",
                             self._edge, self._host)

    def stop(self) -> None:
        stop_all(self._client, self._server)

    def forwarder_pids(self) -> list[int]:
        return [self._client.pid] if self._client is not None and self._client.poll() is None else []

    def describe(self) -> dict[str, Any]:
        return {"server_binary": self._server_bin, "client_binary": self._client_bin, "rule_id": self._rule_id,
                "server_on": self._control.name, "client_on": self._edge.name}


class ClientCappedPath(ClientPath):
    name = "client_capped"
    description = "client path with a bandwidth cap (rate_limit.bandwidth_in_bps) on the pushed rule"
    capped = True
