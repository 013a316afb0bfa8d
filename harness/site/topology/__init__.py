"""Topologies: where client, edge (forwarder) and target run, and how packets get between them.

    loopback   everything on this host's loopback (the default; what every run did before)
    netns      three network namespaces joined by veth pairs, created and removed by the run
    hosts      each role on an executor: this machine, a named namespace, or a host over SSH

`open_topology(spec)` is a context manager: the topology exists inside the
block and is removed when it exits, however it exits (the runner holds
signals while it tears down). `portunus-bench cleanup` removes namespaces
left by a harness that was killed (harness.site.topology.netns.cleanup_leftovers).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from harness.define.topology import LOOPBACK_SPEC, LinkSettings, TopologySpec, parse_topology
from harness.site.topology.base import LOOPBACK_SITE, Crossing, LoopbackTopology, Site, Topology
from harness.site.topology.hosts import HostsTopology
from harness.site.topology.netns import NetnsTopology, TopologyError


def build_topology(spec: TopologySpec) -> Topology:
    """The (not yet opened) topology a spec describes."""
    if spec.kind == "netns":
        return NetnsTopology(spec)
    if spec.kind == "hosts":
        return HostsTopology(spec)
    return LoopbackTopology()


def open_topology_now(spec: TopologySpec) -> Topology:
    """Build and open; the caller must close() it."""
    t = build_topology(spec)
    if isinstance(t, NetnsTopology | HostsTopology):
        t.open()
    return t


@contextmanager
def open_topology(spec: TopologySpec) -> Iterator[Topology]:
    """The topology, up for the block and removed after it (on every exit path)."""
    t = open_topology_now(spec)
    try:
        yield t
    finally:
        t.close()


__all__ = ["LOOPBACK_SITE", "LOOPBACK_SPEC", "Crossing", "LinkSettings", "Site", "Topology", "TopologyError",
           "TopologySpec", "build_topology", "open_topology", "open_topology_now", "parse_topology"]
