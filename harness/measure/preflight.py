"""Checks that run before any measurement: every failure names its fix, and the CLI exits 2."""

from __future__ import annotations

import ctypes.util
import importlib.util
import shutil
from collections.abc import Iterable

from harness.define.topology import LINKS, TopologySpec
from harness.errors import PathError, PreflightError
from harness.measure.iperf import IPERF3
from harness.paths import PATHS, ForwardPath
from harness.site.executor.local import find_local_executable
from harness.site.netutil import busy_ports, who_listens
from harness.site.topology.netns import netns_available
from harness.site.topology.shaping import shaping_support


def ports_per_measurement(paths: Iterable[str]) -> int:
    """The iperf3 target port plus the most ports any of the paths asks for."""
    return 1 + max((PATHS[p].ports_needed for p in paths), default=0)


def check_tools(backend: str, tools: Iterable[tuple[str, str]] = ()) -> None:
    """iperf3 (and, for the python backend, the wrapper and libiperf) are installed, and the driver's
    own tools: (executable, Debian package) pairs."""
    if shutil.which(IPERF3) is None:
        raise PreflightError("iperf3 is not installed: apt-get install iperf3 (or run scripts/setup-system.sh)")
    for tool, package in tools:
        if find_local_executable(tool) is None:
            raise PreflightError(f"{tool} is not installed: apt-get install {package} (or run scripts/setup-system.sh)")
    if backend == "python":
        if importlib.util.find_spec("iperf3") is None:
            raise PreflightError("the python iperf3 backend needs the PyPI 'iperf3' package: "
                                 "pip install -e '.[bench]' (or use backend: cli)")
        if ctypes.util.find_library("iperf") is None:
            raise PreflightError("the python iperf3 backend needs libiperf: apt-get install libiperf0 "
                                 "(or use backend: cli)")


def check_ports(base_port: int | None, paths: Iterable[str]) -> None:
    """With fixed ports, every port a measurement will bind must be free now."""
    if base_port is None:
        return
    ports = range(base_port, base_port + ports_per_measurement(paths))
    busy = busy_ports(ports)
    if busy:
        who = "; ".join(f"{p}: {who_listens(p) or 'in use'}" for p in busy)
        raise PreflightError(f"port(s) {', '.join(map(str, busy))} needed by this run are busy ({who}): "
                             f"stop what holds them, or pick another base port (--base-port / base_port:), "
                             f"or leave it unset to use free ports the kernel picks")


def check_topology(spec: TopologySpec) -> None:
    """The topology can be built here (namespaces need root and iproute2)."""
    if spec.kind == "netns":
        why = netns_available() or shaping_support([spec.link(name) for name in LINKS])
        if why:
            raise PreflightError(f"topology netns: {why}")


def check_paths(names: Iterable[str], skip_unavailable: bool,
                topology: str = "loopback") -> tuple[dict[str, ForwardPath], dict[str, str]]:
    """Availability (on this host and topology kind) and one-time preparation of each path.

    Returns (prepared paths, {skipped path: reason}). An unavailable path is
    an error unless skip_unavailable; then it is skipped and the reason kept.
    """
    ready: dict[str, ForwardPath] = {}
    unavailable: dict[str, str] = {}
    for name in names:
        path = PATHS[name]()
        av = path.available_on(topology)
        if av.ok:
            av = path.available()
        if not av.ok:
            unavailable[name] = av.reason
            continue
        try:
            path.prepare()
        except PathError as e:
            raise PreflightError(f"path {name}: {e}") from None
        ready[name] = path
    if unavailable and not skip_unavailable:
        lines = "\n".join(f"  {n}: {why}" for n, why in unavailable.items())
        raise PreflightError(f"path(s) not available on this host:\n{lines}\n"
                             "Fix the above, or pass --skip-unavailable to measure the other paths "
                             "(the file records which paths were skipped and why).")
    return ready, unavailable
