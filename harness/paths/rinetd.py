"""rinetd: `rinetd -f -c <workdir>/rinetd.conf`, one single-threaded select() loop.

Foreground (-f), own config and pid file in the workdir, no log file. rinetd
has no buffer setting (its buffer size is compiled in), so there is no
"_bigbuf" variant. rinetd 0.7x forwards UDP too (`P/udp` rules), used for a
UDP measurement next to the TCP rule for iperf3's control connection.
rinetd does not do TCP half-close (see `half_close`); its UDP relay leaves
iperf3 -u unable to sequence the datagrams (the udp driver fails such runs).
"""

from __future__ import annotations

from pathlib import Path

from harness.paths._peer import PeerPath
from harness.paths.base import PathSetup
from harness.site.executor.base import Proc
from harness.site.netutil import LOOPBACK


def render_rinetd_conf(workdir: Path, listen_port: int, target_port: int, protocol: str = "tcp",
                       listen_host: str = LOOPBACK, target_host: str = LOOPBACK) -> str:
    """rinetd.conf forwarding listen_host:listen_port -> target_host:target_port (tcp, or tcp and udp)."""
    lines = [f"pidlogfile {workdir / 'rinetd.pid'}",
             f"{listen_host} {listen_port}/tcp {target_host} {target_port}/tcp"]
    if protocol == "udp":
        lines.append(f"{listen_host} {listen_port}/udp {target_host} {target_port}/udp")
    return "\n".join(lines) + "\n"


class RinetdPath(PeerPath):
    name = "rinetd"
    description = "rinetd (single select() loop, compiled-in buffer size)"
    tool = "rinetd"
    package = "rinetd"
    version_args = ("-v",)
    protocols = ("tcp", "udp")
    # Measured here: on the first EOF rinetd closes both sides, so a reply still in flight after
    # the client's half-close is lost (connections reset). iperf3 never half-closes mid-test.
    half_close = False

    def launch(self, setup: PathSetup, listen_port: int) -> Proc:
        assert self._binary is not None
        workdir = setup.workdir.resolve() if self._edge.kind != "ssh" else setup.workdir
        conf = workdir / "rinetd.conf"
        self._edge.write_text(conf, render_rinetd_conf(workdir, listen_port, setup.target_port, setup.protocol,
                                                       setup.site.listen_host, setup.site.target_host))
        proc = self.spawn([self._binary, "-f", "-c", str(conf)])
        self._info = {"config": str(conf)}
        return proc
