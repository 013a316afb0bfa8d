"""NGINX `stream` proxy, run in the foreground with everything in the workdir.

`nginx -p <workdir> -c <workdir>/nginx.conf -e <workdir>/error.log` with
`daemon off;`: its own prefix, config, pid file and error log, so the system
config (/etc/nginx) is never read and no system nginx is touched. The stream
module is a dynamic module on Debian (package libnginx-mod-stream), loaded by
absolute path.

- `nginx`: defaults of the stream proxy (proxy_buffer_size 16 KiB), with
  `worker_processes auto` as Debian's shipped nginx.conf has it, and one
  correctness setting: `proxy_half_close on` (its default, off, ends the
  whole session when the client half-closes and drops the rest of the reply).
- `nginx_bigbuf`: `proxy_buffer_size 256k` (Portunus's copy buffer size).

For a UDP measurement the same server block also listens on `P udp`
(`reuseport`, so every datagram of one client reaches the same worker and one
upstream socket, as nginx's docs advise for UDP with several workers).
Forwarder CPU = master + workers (the process tree).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from harness.paths._peer import BIGBUF_BYTES, PeerPath
from harness.paths.base import Availability, PathSetup
from harness.site.executor.base import Proc
from harness.site.netutil import LOOPBACK

STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")
NGINX_DEFAULT_PROXY_BUFFER_BYTES = 16384  # ngx_stream_proxy_module: proxy_buffer_size 16k
# Debian's nginx.conf default; without it, nginx (as root) would switch its
# workers to user "nobody" group "nobody", and Debian has no group "nobody".
WORKER_USER = "www-data"
WORKER_CONNECTIONS = 1024


def render_nginx_conf(workdir: Path, listen_port: int, target_port: int, *, protocol: str = "tcp",
                      proxy_buffer_bytes: int | None = None, module: Path = STREAM_MODULE,
                      listen_host: str = LOOPBACK, target_host: str = LOOPBACK) -> str:
    """nginx.conf for one stream forward listen_host:listen_port -> target_host:target_port (tcp, or tcp+udp)."""
    listen = [f"        listen {listen_host}:{listen_port};"]
    if protocol == "udp":
        listen.append(f"        listen {listen_host}:{listen_port} udp reuseport;")
    buf = [f"        proxy_buffer_size {proxy_buffer_bytes};"] if proxy_buffer_bytes else []
    return "\n".join([
        f"load_module {module};",
        "daemon off;",
        "worker_processes auto;",
        f"user {WORKER_USER};",
        f"pid {workdir / 'nginx.pid'};",
        f"error_log {workdir / 'error.log'} warn;",
        f"events {{ worker_connections {WORKER_CONNECTIONS}; }}",
        "stream {",
        "    server {",
        *listen,
        *buf,
        # Off by default (nginx >= 1.21.4): a client's half-close would then end the whole session
        # and lose the rest of the reply. Bytes must arrive intact; no effect on bulk throughput.
        "        proxy_half_close on;",
        f"        proxy_pass {target_host}:{target_port};",
        "    }",
        "}",
        "",
    ])


class NginxPath(PeerPath):
    name = "nginx"
    description = "NGINX stream proxy, defaults (proxy_buffer_size 16k), worker_processes auto"
    tool = "nginx"
    package = "nginx libnginx-mod-stream"
    version_args = ("-v",)
    protocols = ("tcp", "udp")
    proxy_buffer_bytes: ClassVar[int | None] = None

    def available(self) -> Availability:
        av = super().available()
        if av.ok and not STREAM_MODULE.is_file():
            return Availability.no(f"the nginx stream module ({STREAM_MODULE}) is not installed: "
                                   "apt-get install libnginx-mod-stream (or make setup)")
        return av

    def launch(self, setup: PathSetup, listen_port: int) -> Proc:
        assert self._binary is not None
        workdir = setup.workdir.resolve() if self._edge.kind != "ssh" else setup.workdir
        conf = workdir / "nginx.conf"
        self._edge.write_text(conf, render_nginx_conf(workdir, listen_port, setup.target_port,
                                                      protocol=setup.protocol,
                                                      proxy_buffer_bytes=self.proxy_buffer_bytes,
                                                      listen_host=setup.site.listen_host,
                                                      target_host=setup.site.target_host))
        # -e: the error log before the config is read (else nginx opens its compiled-in default).
        proc = self.spawn([self._binary, "-p", str(workdir), "-c", str(conf), "-e", str(workdir / "error.log")])
        self._info = {"config": str(conf),
                      "proxy_buffer_bytes": self.proxy_buffer_bytes or NGINX_DEFAULT_PROXY_BUFFER_BYTES}
        return proc


class NginxBigbufPath(NginxPath):
    name = "nginx_bigbuf"
    description = "NGINX stream proxy, proxy_buffer_size 256k (comparable to Portunus's copy path)"
    proxy_buffer_bytes = BIGBUF_BYTES
