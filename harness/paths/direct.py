"""direct: iperf3 client straight to the iperf3 server, no forwarder (the raw ceiling).

On loopback the client dials the target's port on 127.0.0.1. On a forwarded
topology the client dials the target's address through the edge by plain
kernel routing: for netns the measurement adds a route each way through the
edge and sets ip_forward there (no NAT, no forwarder), so `direct` is the
ceiling of the crossing itself; on hosts the operator's network routes it.
"""

from __future__ import annotations

from harness.paths.base import Endpoint, ForwardPath, PathSetup
from harness.site.topology.base import Crossing


class DirectPath(ForwardPath):
    name = "direct"
    description = "iperf3 -> iperf3 server, no forwarder (netns: routed through the edge, no NAT)"
    has_forwarder_process = False
    ports_needed = 0
    protocols = ("tcp", "udp")

    def __init__(self) -> None:
        self._crossing: Crossing | None = None

    def start(self, setup: PathSetup) -> Endpoint:
        if setup.site.crossing is not None:
            self._crossing = setup.site.crossing  # first: stop() must undo a half-opened route
            self._crossing.open_direct_route()
        return Endpoint(setup.site.target_host, setup.target_port)

    def stop(self) -> None:
        if self._crossing is not None:
            self._crossing.close_direct_route()
            self._crossing = None

    def describe(self) -> dict:
        return {"routed_through_edge": self._crossing is not None}
