"""What a topology gives the rest of the harness: executors per role, addresses, and a Site for paths.

    client  --(client_edge)-->  edge  --(edge_target)-->  target
    iperf3 -c / probes          forwarder or kernel rule  iperf3 -s / echo server
                                (control server: `control`, default edge)

A Topology is opened once per run (`open_topology`, harness.site.topology) and
closed on every exit path. Paths see only a Site: the edge's executor, the
address they listen on (the client dials it) and the address of the target
(the edge dials it), and a Crossing that switches kernel forwarding for the
paths that need it (kernel NAT, and `direct`, which routes the client to the
target through the edge with no forwarder).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any

from harness.site.executor.base import Executor
from harness.site.executor.local import LOCAL
from harness.site.netutil import LOOPBACK


class Crossing(abc.ABC):
    """Kernel forwarding through the edge (absent on loopback, where nothing crosses)."""

    @abc.abstractmethod
    def set_ip_forward(self, on: bool) -> bool:
        """Set net.ipv4.ip_forward on the edge; returns the previous value."""

    @abc.abstractmethod
    def open_direct_route(self) -> None:
        """Let the client reach the target through the edge by plain routing (the `direct` path)."""

    @abc.abstractmethod
    def close_direct_route(self) -> None:
        """Undo open_direct_route (idempotent)."""


@dataclass(frozen=True)
class Site:
    """Where a path runs, as the topology lays it out (PathSetup.site)."""

    topology: str  # loopback | netns | hosts
    edge: Executor  # runs forwarders; kernel rules are applied through it
    control: Executor  # runs portunus-server (the client path)
    listen_host: str  # forwarders listen on this address of the edge; the client dials it
    target_host: str  # the target listens here; the edge dials it
    control_host: str  # the control server's address as the edge reaches it
    crossing: Crossing | None = None  # None: loopback (kernel paths use the OUTPUT hook there)
    edge_devices: tuple[str, ...] = ()  # the edge's interfaces towards client and target (flowtables)
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def loopback(self) -> bool:
        """True when client, forwarder and target share one loopback (no packet crosses an interface)."""
        return self.crossing is None


LOOPBACK_SITE = Site(topology="loopback", edge=LOCAL, control=LOCAL, listen_host=LOOPBACK,
                     target_host=LOOPBACK, control_host=LOOPBACK)


class Topology(abc.ABC):
    """A running topology: executors per role and the Site paths get. Close it on every exit path."""

    kind: str

    @property
    @abc.abstractmethod
    def client(self) -> Executor:
        """Runs iperf3 -c and the probes."""

    @property
    @abc.abstractmethod
    def target(self) -> Executor:
        """Runs iperf3 -s and the echo server."""

    @property
    @abc.abstractmethod
    def site(self) -> Site:
        """What paths get."""

    def executors(self) -> dict[str, Executor]:
        return {"client": self.client, "edge": self.site.edge, "target": self.target, "control": self.site.control}

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """For the result header: kind, roles, addresses, link settings as applied."""

    def close(self) -> None:
        """Tear everything down (idempotent)."""
        return None


class LoopbackTopology(Topology):
    """Today's layout: every role is this host's loopback."""

    kind = "loopback"

    @property
    def client(self) -> Executor:
        return LOCAL

    @property
    def target(self) -> Executor:
        return LOCAL

    @property
    def site(self) -> Site:
        return LOOPBACK_SITE

    def describe(self) -> dict[str, Any]:
        return {"kind": "loopback", "address": LOOPBACK}
