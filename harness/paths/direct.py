"""direct: iperf3 client straight to the iperf3 server, no forwarder (the raw ceiling)."""

from __future__ import annotations

from harness.netutil import LOOPBACK
from harness.paths.base import Endpoint, ForwardPath, PathSetup


class DirectPath(ForwardPath):
    name = "direct"
    description = "iperf3 -> iperf3 server, no forwarder"
    has_forwarder_process = False
    ports_needed = 0
    protocols = ("tcp", "udp")

    def start(self, setup: PathSetup) -> Endpoint:
        return Endpoint(LOOPBACK, setup.target_port)

    def stop(self) -> None:
        pass
