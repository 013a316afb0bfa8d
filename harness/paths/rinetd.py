"""rinetd: `rinetd -f -c <workdir>/rinetd.conf`, one single-threaded select() loop.

Foreground (-f), own config and pid file in the workdir, no log file. rinetd
has no buffer setting (its buffer size is compiled in), so there is no
"_bigbuf" variant. rinetd 0.7x forwards UDP too (`P/udp` rules), used for a
UDP measurement next to the TCP rule for iperf3's control connection.
rinetd does not do TCP half-close (see `half_close`); its UDP relay leaves
iperf3 -u unable to sequence the datagrams (the udp driver fails such runs).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from harness.netutil import LOOPBACK
from harness.paths._peer import PeerPath
from harness.paths.base import PathSetup


def render_rinetd_conf(workdir: Path, listen_port: int, target_port: int, protocol: str = "tcp") -> str:
    """rinetd.conf forwarding listen_port -> 127.0.0.1:target_port (tcp, or tcp and udp)."""
    lines = [f"pidlogfile {workdir / 'rinetd.pid'}",
             f"{LOOPBACK} {listen_port}/tcp {LOOPBACK} {target_port}/tcp"]
    if protocol == "udp":
        lines.append(f"{LOOPBACK} {listen_port}/udp {LOOPBACK} {target_port}/udp")
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

    def launch(self, setup: PathSetup, listen_port: int) -> subprocess.Popen:
        assert self._binary is not None
        workdir = setup.workdir.resolve()
        conf = workdir / "rinetd.conf"
        conf.write_text(render_rinetd_conf(workdir, listen_port, setup.target_port, setup.protocol))
        proc = self.spawn([self._binary, "-f", "-c", str(conf)])
        self._info = {"config": str(conf)}
        return proc
