"""The `http` kind's processes: NGINX serving static files (the target) and wrk (the client).

- Web server: `nginx -p <workdir> -c <workdir>/web.conf` in the foreground
  (`daemon off;`), its own prefix, pid file and logs, never /etc/nginx. It
  serves `<size>.bin` files of exactly the configured sizes from the
  workdir, access log off, `sendfile on`, keep-alive requests unlimited
  (nginx's default, 1000, would close every keep-alive connection after
  1000 requests and turn the keep-alive mode into a connection-rate test).
  Workers run as the user who runs it (as root: root), because the files are
  in the harness's private scratch dir.
- Client: `wrk -t T -c C -d S --timeout N --latency -s report.lua URL`, with
  `-H 'Connection: close'` in close mode (the server closes after each
  response, wrk reconnects: one connection per request). The report script
  (harness.records.wrk_report.REPORT_SCRIPT) prints exact counts and
  percentiles; wrk's whole stdout is kept with the command line and the
  machine's state (CPUs, no pinning, load average before and after).

Nothing is pinned: on a 2-core host wrk, nginx and the forwarder share both
CPUs, as they would share a small VPS; the record says so.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.define.experiment import HttpSettings
from harness.errors import HarnessError
from harness.records.wrk_report import REPORT_SCRIPT, WrkError, WrkRun
from harness.site import procs
from harness.site.executor.base import Executor, ExecutorError
from harness.site.executor.local import LOCAL

WRK = "wrk"
NGINX = "nginx"
# An nginx master listens within milliseconds; a loaded host gets 15 s.
SERVER_START_TIMEOUT_S = 15.0
# Beyond wrk's own duration: its start, the last responses (up to its timeout) and the report.
CLIENT_TIMEOUT_MARGIN_S = 20.0
WORKER_CONNECTIONS = 4096
LISTEN_BACKLOG = 4096  # = net.core.somaxconn here: close mode opens thousands of connections a second


def file_name(size_bytes: int) -> str:
    return f"{size_bytes}.bin"


def url_path(size_bytes: int) -> str:
    return "/" + file_name(size_bytes)


def file_body(size_bytes: int) -> str:
    """The served file: printable bytes of exactly that size (written as text on any executor)."""
    line = "portunus-bench http body ".ljust(63, "x") + "\n"
    return (line * (size_bytes // len(line) + 1))[:size_bytes]


def render_web_conf(workdir: Path, host: str, port: int, root: Path, workers: int, user: str | None) -> str:
    """nginx.conf of the web server: static files from root on host:port."""
    return "\n".join([
        "daemon off;",
        f"worker_processes {workers};",
        *([f"user {user};"] if user else []),
        f"pid {workdir / 'web.pid'};",
        f"error_log {workdir / 'web-error.log'} warn;",
        f"events {{ worker_connections {WORKER_CONNECTIONS}; }}",
        "http {",
        "    access_log off;",
        "    sendfile on;",
        "    tcp_nopush on;",
        "    keepalive_timeout 65s;",
        "    keepalive_requests 1000000000;",
        "    default_type application/octet-stream;",
        f"    client_body_temp_path {workdir / 'client_body'};",
        f"    proxy_temp_path {workdir / 'proxy'};",
        f"    fastcgi_temp_path {workdir / 'fastcgi'};",
        f"    uwsgi_temp_path {workdir / 'uwsgi'};",
        f"    scgi_temp_path {workdir / 'scgi'};",
        "    server {",
        f"        listen {host}:{port} backlog={LISTEN_BACKLOG};",
        f"        root {root};",
        "    }",
        "}",
        "",
    ])


def find_tool(name: str, ex: Executor) -> str:
    """The tool on executor ex, or a HarnessError naming the package (make setup installs both)."""
    found = ex.which(name)
    if found is None:
        raise HarnessError(f"{name} is not installed on {ex.name}: apt-get install {name} (or make setup)")
    return found


def _user(ex: Executor) -> str | None:
    """The user nginx's workers run as: the executor's own (its master only switches when it is root)."""
    try:
        r = ex.run(["id", "-un"], timeout_s=10)
    except ExecutorError:
        return None
    return (r.stdout.strip() or None) if r.ok else None


@contextmanager
def open_web_server(ex: Executor, host: str, port: int, workdir: Path, settings: HttpSettings,
                    log_path: Path | None = None) -> Iterator[Any]:
    """nginx serving one file per configured size on host:port (on executor ex); stopped on exit."""
    binary = find_tool(NGINX, ex)
    root = workdir / "www"
    for size in settings.response_bytes:
        ex.write_text(root / file_name(size), file_body(size))
    conf = workdir / "web.conf"
    ex.write_text(conf, render_web_conf(workdir, host, port, root, settings.server_workers, _user(ex)))
    proc = ex.spawn([binary, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "web-error.log")],
                    log_path=log_path)
    try:
        try:
            ex.wait_listening(port, proc, SERVER_START_TIMEOUT_S)
        except TimeoutError as e:
            detail = ex.read_text(workdir / "web-error.log")[-500:]
            raise WrkError(f"web server (nginx) on {host}:{port} did not start: {e}. {detail}") from None
        yield proc
    finally:
        procs.stop(proc)


@dataclass(frozen=True)
class WrkParams:
    """One wrk run against one file."""

    host: str
    port: int
    seconds: int
    mode: str  # keepalive | close
    response_bytes: int
    threads: int
    connections: int
    timeout_s: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{url_path(self.response_bytes)}"


def wrk_argv(p: WrkParams, script: Path, binary: str = WRK) -> list[str]:
    argv = [binary, "-t", str(p.threads), "-c", str(p.connections), "-d", f"{p.seconds}s",
            "--timeout", f"{p.timeout_s}s", "--latency", "-s", str(script)]
    if p.mode == "close":
        argv += ["-H", "Connection: close"]
    return argv + [p.url]


def _loadavg(ex: Executor) -> list[float] | None:
    """The host's 1/5/15-minute load average there (the machine state next to each number)."""
    try:
        return [float(x) for x in ex.read_text(Path("/proc/loadavg")).split()[:3]]
    except (OSError, ExecutorError, ValueError):
        return None


def _cpus(ex: Executor) -> int | None:
    """CPUs of the host there (wrk, the web server and the forwarder share them: nothing is pinned)."""
    try:
        r = ex.run(["nproc", "--all"], timeout_s=10)
        return int(r.stdout.strip()) if r.ok else None
    except (ExecutorError, ValueError):
        return None


def run_wrk(p: WrkParams, workdir: Path, ex: Executor = LOCAL) -> str:
    """Run wrk on executor ex; returns the record's wrk_raw (WrkRun JSON). WrkError if wrk printed nothing."""
    binary = find_tool(WRK, ex)
    script = workdir / "wrk-report.lua"
    ex.write_text(script, REPORT_SCRIPT)
    argv = wrk_argv(p, script, binary)
    context: dict[str, Any] = {"host_cpus": _cpus(ex), "pinned": False,
                               "executor": ex.name, "loadavg_before": _loadavg(ex)}
    proc = ex.spawn(argv, capture=True)
    try:
        stdout, stderr = proc.communicate(timeout=p.seconds + p.timeout_s + CLIENT_TIMEOUT_MARGIN_S)
    except subprocess.TimeoutExpired:
        raise WrkError(f"wrk did not finish within {p.seconds + p.timeout_s + CLIENT_TIMEOUT_MARGIN_S:.0f} s; "
                       "killed") from None
    finally:
        procs.stop(proc)
    context["loadavg_after"] = _loadavg(ex)
    out, err = stdout.decode(errors="replace"), stderr.decode(errors="replace")
    if not out.strip():
        raise WrkError(f"wrk exited {proc.returncode} with no output: {err.strip()[-500:]}")
    return WrkRun(tuple(argv), out, err, proc.returncode, context).to_json()
