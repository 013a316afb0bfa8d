"""The `hosts` topology: each role on an executor of its own (this machine, a namespace, or SSH).

Nothing is created: the machines, their addresses and the routes between them
are the operator's. The harness only starts and stops its processes there and,
for the kernel NAT paths, switches net.ipv4.ip_forward on the edge for the
measurement (restoring the previous value). `direct` dials the target address
from the client host as the network routes it (no route is added anywhere).
"""

from __future__ import annotations

from typing import Any

from harness.define.topology import ROLES, HostSpec, TopologySpec
from harness.site.executor.base import Executor
from harness.site.executor.local import LOCAL, NetnsExecutor
from harness.site.executor.ssh import SshExecutor
from harness.site.netutil import LOOPBACK
from harness.site.topology.base import Crossing, Site, Topology
from harness.site.topology.netns import TopologyError, set_ip_forward


def executor_for(h: HostSpec) -> Executor:
    """The executor a hosts-topology role names."""
    if h.executor == "local":
        return LOCAL
    if h.executor == "netns":
        assert h.netns is not None
        return NetnsExecutor(h.netns)
    assert h.ssh is not None
    return SshExecutor(h.ssh)


class HostsCrossing(Crossing):
    def __init__(self, edge: Executor) -> None:
        self._edge = edge

    def set_ip_forward(self, on: bool) -> bool:
        return set_ip_forward(self._edge, on)

    def open_direct_route(self) -> None:
        return None  # the operator's network routes client -> target (or it does not: then direct fails)

    def close_direct_route(self) -> None:
        return None


class HostsTopology(Topology):
    kind = "hosts"

    def __init__(self, spec: TopologySpec) -> None:
        assert spec.kind == "hosts"
        self.spec = spec
        self._executors: dict[str, Executor] = {}
        for role in ROLES:
            self._executors[role] = executor_for(spec.host(role))

    def open(self) -> HostsTopology:
        """Check every host answers (a first command over each executor)."""
        try:
            for role, ex in self._executors.items():
                r = ex.run(["true"])
                if not r.ok:
                    raise TopologyError(f"{role} ({ex.name}) does not run commands: {r.why()}")
        except BaseException:
            self.close()
            raise
        return self

    @property
    def client(self) -> Executor:
        return self._executors["client"]

    @property
    def target(self) -> Executor:
        return self._executors["target"]

    @property
    def site(self) -> Site:
        assert self.spec.edge_address and self.spec.target_address
        control_host = {"edge": LOOPBACK, "target": self.spec.target_address,
                        "client": self.spec.client_address or ""}[self.spec.control]
        edge = self._executors["edge"]
        return Site(topology="hosts", edge=edge, control=self._executors[self.spec.control],
                    listen_host=self.spec.edge_address, target_host=self.spec.target_address,
                    control_host=control_host, crossing=HostsCrossing(edge), edge_devices=self.spec.edge_devices)

    def describe(self) -> dict[str, Any]:
        return {"kind": "hosts", "control": self.spec.control,
                "roles": {r: ex.describe() for r, ex in self._executors.items()},
                "addresses": {"edge": self.spec.edge_address, "target": self.spec.target_address,
                              "client": self.spec.client_address},
                "edge_devices": list(self.spec.edge_devices),
                "direct": "the client dials the target address as the network routes it"}

    def close(self) -> None:
        seen = set()
        for ex in self._executors.values():
            if id(ex) not in seen:
                seen.add(id(ex))
                ex.close()
