"""Shared base of the comparable-forwarder paths: one tool, one config in the workdir, run by PID.

A peer path writes its config into the measurement's workdir, starts the
tool in the foreground as a child of the harness (own session, stopped by
PID), and is ready when its process owns a LISTEN socket on the listen port
(plus a bound UDP socket when the measurement is UDP). Its forwarder CPU is
the process tree under the started PID (workers, per-connection children),
see harness.procs.tree_cpu_seconds.

A peer whose tool is missing reports itself unavailable with the package
to install: it never produces a number it did not measure.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, ClassVar

from harness import procs
from harness.errors import PathError
from harness.netutil import LOOPBACK, wait_udp_bound
from harness.paths._proc_path import READY_TIMEOUT_S, log_tail, stop_all, wait_process_accepts
from harness.paths.base import Availability, Endpoint, ForwardPath, PathSetup

# Buffer size of the "_bigbuf" variants: the size of Portunus's copy-path
# buffer (portunus.dataplane.pumps.COPY_BUFFER_BYTES), so a peer is compared
# with like buffers and not only with what its defaults give.
BIGBUF_BYTES = 256 * 1024


_VERSIONS: dict[tuple[str, ...], str] = {}
_VERSION_RE = re.compile(r"\d+\.\d+")


def tool_version(argv: list[str]) -> str:
    """First line with a version number that `tool -V`-style argv prints (stdout or stderr), or ''."""
    key = tuple(argv)
    if key not in _VERSIONS:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            lines = (proc.stdout + "\n" + proc.stderr).splitlines()
        except (OSError, subprocess.SubprocessError):
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
    # Whether an EOF one way is passed on while the other way keeps flowing (TCP half-close).
    half_close: ClassVar[bool] = True

    def __init__(self) -> None:
        self._binary = self.find_tool()
        self._procs: list[subprocess.Popen] = []  # in start order
        self._listener: subprocess.Popen | None = None  # owns the TCP listen socket
        self._port: int | None = None
        self._protocol = "tcp"
        self._log: Path | None = None
        self._info: dict[str, Any] = {}

    @classmethod
    def find_tool(cls) -> str | None:
        found = shutil.which(cls.tool)
        if found is None:
            for d in ("/usr/sbin", "/usr/bin", "/sbin"):
                if Path(d, cls.tool).is_file():
                    return str(Path(d, cls.tool))
        return found

    def available(self) -> Availability:
        if self._binary is None:
            return Availability.no(f"{self.tool} is not installed: apt-get install {self.package} "
                                   "(or run scripts/setup-system.sh / make setup)")
        return Availability.yes()

    # ---- what a subclass provides

    def launch(self, setup: PathSetup, listen_port: int) -> subprocess.Popen:
        """Write the config into setup.workdir, start the tool with self.spawn(); returns the
        process that will own the TCP listen socket on listen_port."""
        raise NotImplementedError

    # ---- the ForwardPath lifecycle

    def start(self, setup: PathSetup) -> Endpoint:
        if self._binary is None:
            raise PathError(self.available().reason)
        if setup.protocol not in self.protocols:
            raise PathError(f"{self.name} does not forward {setup.protocol} here")
        self._port = setup.alloc_port()
        self._protocol = setup.protocol
        self._log = setup.workdir / f"{self.name}.log"
        self._procs = []
        # self.spawn() registers each process as it starts, so stop() finds every one even
        # if launch() fails half-way.
        self._listener = self.launch(setup, self._port)
        return Endpoint(LOOPBACK, self._port)

    def spawn(self, argv: list[str], log_path: Path | None = None, **kw: Any) -> subprocess.Popen:
        """procs.spawn, registered with this path so stop() always stops it."""
        p = procs.spawn(argv, log_path=log_path or self._log, **kw)
        self._procs.append(p)
        return p

    def ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        assert self._listener is not None and self._port is not None and self._log is not None
        wait_process_accepts(self._listener, self._port, timeout_s, self.tool, self._log)
        if self._protocol == "udp":
            try:
                wait_udp_bound(self._port, timeout_s, alive=lambda: all(p.poll() is None for p in self._procs),
                               pids=[p.pid for p in self._procs] + self._descendants())
            except TimeoutError as e:
                raise PathError(f"{self.tool}: {e}. Log {self._log}:\n{log_tail(self._log)}") from None

    def _descendants(self) -> list[int]:
        return [c for p in self._procs for c in procs.descendants(p.pid)]

    def stop(self) -> None:
        # Descendants that left the process group (sshd's per-connection processes call
        # setsid()) are not reached by stopping the group: note them first, end them after.
        stray = self._descendants()
        stop_all(*reversed(self._procs))  # last started first: the client side before its server
        procs.stop_pids(stray)

    def forwarder_pids(self) -> list[int]:
        # Roots only: the runner charges each root's whole process tree (workers, forks).
        return [p.pid for p in self._procs if p.poll() is None]

    def describe(self) -> dict[str, Any]:
        version = tool_version([self._binary, *self.version_args]) if self._binary else ""
        return {"binary": self._binary, "version": version, "protocol": self._protocol, **self._info}
