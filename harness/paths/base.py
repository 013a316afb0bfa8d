"""The one interface every forwarding path implements.

A path is started once per measurement and stopped right after it, so only
one forwarding implementation exists at a time (the spec's fair-benchmark
rule 5). Lifecycle, driven by harness.measure.runner:

    path = PATHS[name]()                 # cheap; no side effects
    path.available()  -> Availability    # preflight: can it run here? why not?
    path.prepare()                       # preflight: one-time work (build a binary)
    ep = path.start(setup)               # returns the Endpoint iperf3 dials
    path.ready(timeout_s)                # blocks until traffic can flow
    path.forwarder_pids()                # processes whose CPU time is charged to the path
    ...iperf3 server on setup.target_port, client to ep...
    path.stop()                          # ALWAYS runs (finally), even after a failed start

Important: `ready()` must not connect through the path. A probe connection
through a forwarder reaches the target (possibly late, from a dial thread),
and `iperf3 -s -1` takes any connection as its one test and exits. Forwarder
paths therefore wait, through /proc, until their process owns a LISTEN socket
on the listen port (harness.site.netutil.wait_listening); the kernel accepts into
that socket's backlog from then on.

Topologies: `setup.site` (harness.site.topology.base.Site) says where the path
runs. Every process and command of a path goes through `site.edge` (an
executor: this host, a network namespace, or a host over SSH); forwarders
listen on `site.listen_host` and dial `site.target_host`. On loopback both are
127.0.0.1 and `site.crossing` is None; on a forwarded topology (netns, hosts)
the client and the target are elsewhere and kernel paths switch forwarding
on through `site.crossing`. A path that cannot run on a topology says so in
`available_on(topology)` with the reason; it never measures something else.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from harness.records.header import PathFacts
from harness.site.executor.base import Executor
from harness.site.topology.base import LOOPBACK_SITE, Site


@dataclass(frozen=True)
class Availability:
    """Whether a path can run on this host, and if not, why (with the fix)."""

    ok: bool
    reason: str = ""

    @classmethod
    def yes(cls) -> Availability:
        return cls(True, "")

    @classmethod
    def no(cls, reason: str) -> Availability:
        return cls(False, reason)


@dataclass(frozen=True)
class Endpoint:
    """Where the iperf3 client connects."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class PathSetup:
    """What one measurement asks of a path."""

    target_port: int  # the iperf3 server listens on site.target_host:target_port
    workdir: Path  # scratch dir for this measurement on the edge's host: configs, logs, data dirs
    alloc_port: Callable[[], int]  # more ports (listen port, control ports, ...)
    cap_bytes_per_s: int | None = None  # bandwidth cap for paths that support one
    protocol: str = "tcp"
    site: Site = LOOPBACK_SITE  # where the path runs: edge executor, listen and target addresses
    local_workdir: Path | None = None  # the harness's own scratch dir of this measurement (default: workdir)

    def workdir_on(self, ex: Executor) -> Path:
        """This measurement's scratch dir on executor ex's host (e.g. the control server's)."""
        return ex.mirror_dir(self.local_workdir or self.workdir)


class ForwardPath(abc.ABC):
    """Base class of every path. Subclasses set the ClassVars and implement start/stop."""

    name: ClassVar[str]
    description: ClassVar[str]
    # A kernel path (no process) has no forwarder CPU to record.
    has_forwarder_process: ClassVar[bool] = True
    # A capped path is measured at each of the experiment's caps_bytes_per_s
    # (setup.cap_bytes_per_s is set); every other path always runs uncapped.
    capped: ClassVar[bool] = False
    needs_root: ClassVar[bool] = False
    # How many ports from setup.alloc_port() one measurement uses (preflight checks them).
    ports_needed: ClassVar[int] = 1
    # Values of setup.protocol the path can carry. "udp" means UDP datagrams AND TCP on
    # the same listen port: `iperf3 -u` keeps its control connection on TCP.
    protocols: ClassVar[tuple[str, ...]] = ("tcp",)
    # Whether an EOF one way is passed on while the other way keeps flowing (TCP half-close).
    half_close: ClassVar[bool] = True

    @classmethod
    def facts(cls) -> PathFacts:
        """What the result header records about this path, so analysis needs no path class."""
        return PathFacts(forwarder_process=cls.has_forwarder_process, protocols=tuple(cls.protocols),
                         half_close=cls.half_close, capped=cls.capped)

    def available(self) -> Availability:
        """Whether this path can run here; cheap, no side effects."""
        return Availability.yes()

    def available_on(self, topology: str) -> Availability:
        """Whether this path can run on a topology kind (loopback | netns | hosts); cheap."""
        return Availability.yes()

    def prepare(self) -> None:
        """One-time work before measuring (e.g. compile a binary); raise PathError on failure."""
        return None  # optional hook: most paths need no preparation

    @abc.abstractmethod
    def start(self, setup: PathSetup) -> Endpoint:
        """Bring the path up for one measurement; returns where iperf3 connects."""

    def ready(self, timeout_s: float) -> None:
        """Block until traffic can flow (raise PathError otherwise). Runs before the iperf3 server starts."""
        return None  # optional hook: e.g. direct is ready as soon as it starts

    @abc.abstractmethod
    def stop(self) -> None:
        """Tear everything down. Idempotent; safe after a partial or failed start."""

    def forwarder_pids(self) -> list[int]:
        """Processes that forward the bytes (their CPU time is the path's cost)."""
        return []

    def describe(self) -> dict[str, Any]:
        """Facts about this instance for the run record (binary, splice on/off, ...)."""
        return {}
