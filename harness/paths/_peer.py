"""Shared base of the comparable-forwarder paths: one tool, one config in the workdir, run by PID.

A peer path writes its config into the measurement's workdir, starts the
tool in the foreground as a child of the harness (own session, stopped by
PID), and is ready when its process owns a LISTEN socket on the listen port
(plus a bound UDP socket when the measurement is UDP). Its forwarder CPU is
the process tree under the started PID (workers, per-connection children),
see harness.site.procs.tree_cpu_seconds.

A peer whose tool is missing reports itself unavailable with the package
to install: it never produces a number it did not measure.

Everything runs on the site's edge executor (this host, a namespace, a host
over SSH): the tool is looked up there, configs are written there, and its
config listens on site.listen_host and dials site.target_host.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any, ClassVar

from harness.errors import PathError
from harness.paths._proc_path import READY_TIMEOUT_S, log_tail, stop_all, wait_process_accepts
from harness.paths.base import Availability, Endpoint, ForwardPath, PathSetup
from harness.site.executor.base import Executor, Proc
from harness.site.executor.local import LOCAL, find_local_executable
from harness.site.netutil import LOOPBACK

# Buffer size of the "_bigbuf" variants: the size of Portunus's copy-path
# buffer (portunus.dataplane.tcp.COPY_BUFFER_BYTES), so a peer is compared
# with like buffers and not only with what its defaults give.
BIGBUF_BYTES = 256 * 1024


_VERSIONS: dict[tuple[str, ...], str] = {}
_VERSION_RE = re.compile(r"\d+\.\d+")


def tool_version(argv: list[str], ex: Executor = LOCAL) -> str:
    """First line with a version number that `tool -V`-style argv prints (stdout or stderr), or ''."""
    key = (ex.name, *argv)
    if key not in _VERSIONS:
        try:
            proc = ex.run(argv, timeout_s=10)
            lines = (proc.stdout + "\n" + proc.stderr).splitlines()
        except Exception:  # a version string is decoration: never fail a measurement for it
            lines = []
        _VERSIONS[key] = next((ln.strip() for ln in lines if _VERSION_RE.search(ln)), "")
    return _VERSIONS[key]


class PeerPath(ForwardPath):
    """A forwarder we do not own, run from its Debian package with a config we write."""

    # Executable name (looked up on PATH, then in /usr/sbin: root's PATH may lack it).
    tool: ClassVar[str]
    # Debian package that provides it (named in the "unavailable" reason).
    package: ClassVar[str]
    # `tool --version`-style argv tail, recorded in path_info.
    version_args: ClassVar[tuple[str, ...]] = ("-V",)

    def __init__(self) -> None:
        self._binary = self.find_tool()
        self._procs: list[Proc] = []  # in start order
        self._listener: Proc | None = None  # owns the TCP listen socket
        self._port: int | None = None
        self._host = LOOPBACK
        self._protocol = "tcp"
        self._log: Path | None = None
        self._info: dict[str, Any] = {}
        self._edge: Executor = LOCAL

    @classmethod
    def find_tool(cls) -> str | None:
        found = shutil.which(cls.tool)
        return found if found is not None else find_local_executable(cls.tool)

    def available(self) -> Availability:
        if self._binary is None:
            return Availability.no(f"{self.tool} is not installed: apt-get install {self.package} "
                                   "(or run scripts/setup-system.sh / make setup)")
        return Availability.yes()

    # ---- what a subclass provides

    def launch(self, setup: PathSetup, listen_port: int) -> Proc:
        """Write the config into setup.workdir, start the tool with self.spawn(); returns the
        process that will own the TCP listen socket on listen_port."""
        raise NotImplementedError

    # ---- the ForwardPath lifecycle

    def start(self, setup: PathSetup) -> Endpoint:
        self._edge = setup.site.edge
        if self._edge.kind == "ssh":  # another host: look the tool up there
            self._binary = self._edge.which(self.tool)
            if self._binary is None:
                raise PathError(f"{self.tool} not found on {self._edge.name}: apt-get install {self.package} there")
        if self._binary is None:
            raise PathError(self.available().reason)
        if setup.protocol not in self.protocols:
            raise PathError(f"{self.name} does not forward {setup.protocol} here")
        self._host = setup.site.listen_host
        self._port = setup.alloc_port()
        self._protocol = setup.protocol
        self._log = setup.workdir / f"{self.name}.log"
        self._procs = []
        # self.spawn() registers each process as it starts, so stop() finds every one even
        # if launch() fails half-way.
        self._listener = self.launch(setup, self._port)
        return Endpoint(self._host, self._port)

    def spawn(self, argv: list[str], log_path: Path | None = None, **kw: Any) -> Proc:
        """Start a process on the edge, registered with this path so stop() always stops it."""
        p = self._edge.spawn(argv, log_path=log_path or self._log, **kw)
        self._procs.append(p)
        return p

    def ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        assert self._listener is not None and self._port is not None and self._log is not None
        wait_process_accepts(self._listener, self._port, timeout_s, self.tool, self._log, self._edge, self._host)
        if self._protocol == "udp":
            try:
                self._edge.wait_udp_bound(self._port, self._procs, timeout_s)
            except TimeoutError as e:
                raise PathError(f"{self.tool}: {e}. Log {self._log}:\n{log_tail(self._log, ex=self._edge)}") from None

    def _descendants(self) -> list[int]:
        return [c for p in self._procs for c in self._edge.descendants(p.pid)]

    def stop(self) -> None:
        # Descendants that left the process group (sshd's per-connection processes call
        # setsid()) are not reached by stopping the group: note them first, end them after.
        try:
            stray = self._descendants() if self._procs else []
        except Exception:  # e.g. the SSH connection is gone: still stop what we hold
            stray = []
        stop_all(*reversed(self._procs))  # last started first: the client side before its server
        if stray:
            self._edge.stop_pids(stray)

    def forwarder_pids(self) -> list[int]:
        # Roots only: the runner charges each root's whole process tree (workers, forks).
        return [p.pid for p in self._procs if p.poll() is None]

    def describe(self) -> dict[str, Any]:
        version = tool_version([self._binary, *self.version_args], self._edge) if self._binary else ""
        return {"binary": self._binary, "version": version, "protocol": self._protocol, **self._info}
