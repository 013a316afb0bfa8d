"""socat: `socat TCP-LISTEN:P,fork,reuseaddr TCP:127.0.0.1:T`, one forked child per connection.

`socat` runs with socat's default transfer buffer (8 KiB: what users get);
`socat_bigbuf` with `-b 262144`, the size of Portunus's copy buffer. For a
UDP measurement a second socat relays `UDP-LISTEN:P,fork` to the target's
UDP port (one child per client address), next to the TCP one for iperf3's
control connection. socat's CPU includes its forked children (process tree).
"""

from __future__ import annotations

from typing import ClassVar

from harness.paths._peer import BIGBUF_BYTES, PeerPath
from harness.paths.base import PathSetup
from harness.site.executor.base import Proc
from harness.site.netutil import LOOPBACK

SOCAT_DEFAULT_BUFFER_BYTES = 8192  # socat(1): -b default


def socat_argv(binary: str, protocol: str, listen_port: int, target_port: int,
               buffer_bytes: int | None = None, listen_host: str = LOOPBACK, target_host: str = LOOPBACK) -> list[str]:
    """The socat command line relaying protocol ("tcp" | "udp") from listen_port to the target."""
    proto = protocol.upper()
    argv = [binary]
    if buffer_bytes is not None:
        argv += ["-b", str(buffer_bytes)]
    return argv + [f"{proto}-LISTEN:{listen_port},bind={listen_host},fork,reuseaddr",
                   f"{proto}:{target_host}:{target_port}"]


class SocatPath(PeerPath):
    name = "socat"
    description = "socat TCP-LISTEN,fork (default 8 KiB buffer), fork per connection"
    tool = "socat"
    package = "socat"
    protocols = ("tcp", "udp")
    buffer_bytes: ClassVar[int | None] = None

    def launch(self, setup: PathSetup, listen_port: int) -> Proc:
        assert self._binary is not None
        hosts = {"listen_host": setup.site.listen_host, "target_host": setup.site.target_host}
        tcp_argv = socat_argv(self._binary, "tcp", listen_port, setup.target_port, self.buffer_bytes, **hosts)
        listener = self.spawn(tcp_argv)
        argvs = [tcp_argv]
        if setup.protocol == "udp":
            udp_argv = socat_argv(self._binary, "udp", listen_port, setup.target_port, self.buffer_bytes, **hosts)
            self.spawn(udp_argv, log_path=setup.workdir / f"{self.name}-udp.log")
            argvs.append(udp_argv)
        self._info = {"argv": [" ".join(a) for a in argvs],
                      "buffer_bytes": self.buffer_bytes or SOCAT_DEFAULT_BUFFER_BYTES}
        return listener


class SocatBigbufPath(SocatPath):
    name = "socat_bigbuf"
    description = f"socat -b {BIGBUF_BYTES} (buffer comparable to Portunus's copy path), fork per connection"
    buffer_bytes = BIGBUF_BYTES
