"""reference: tools/csplice.c, the minimal C splice forwarder (ceiling of a userspace forwarder here).

Compiled by the harness with the system C compiler into a cache directory
keyed by the source's hash, so an edited source is rebuilt and an unchanged
one is not. On a forwarded topology it listens on the edge's address and
dials the target's (csplice's optional LISTEN_ADDR / TARGET_ADDR arguments;
on loopback its command line is the two ports, as always). On an SSH edge the
source is copied there and compiled with that host's `cc`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from harness.errors import PathError
from harness.paths._proc_path import READY_TIMEOUT_S, stop_all, wait_process_accepts
from harness.paths.base import Availability, Endpoint, ForwardPath, PathSetup
from harness.site.executor.base import Executor, Proc
from harness.site.executor.local import LOCAL, LocalExecutor
from harness.site.netutil import LOOPBACK

SOURCE = Path(__file__).resolve().parents[2] / "tools" / "csplice.c"
CC = os.environ.get("CC", "cc")
CFLAGS = ["-O2", "-pthread"]  # as the header comment of csplice.c says


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "portunus-bench"


def build_csplice(source: Path = SOURCE, out_dir: Path | None = None) -> Path:
    """Compile csplice.c (once per source content); returns the binary path."""
    src = source.read_bytes()
    digest = hashlib.sha256(src + " ".join([CC, *CFLAGS]).encode()).hexdigest()[:16]
    out_dir = out_dir or cache_dir()
    binary = out_dir / f"csplice-{digest}"
    if binary.is_file():
        return binary
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = binary.with_suffix(f".tmp{os.getpid()}")
    proc = subprocess.run([CC, *CFLAGS, "-o", str(tmp), str(source)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise PathError(f"compiling {source} with {CC} failed:\n{proc.stderr.strip()}")
    tmp.replace(binary)  # atomic: a concurrent build never sees a half-written binary
    return binary


def build_csplice_on(ex: Executor, workdir: Path, source: Path = SOURCE) -> Path:
    """Compile csplice.c on a remote executor's host, in workdir there; returns the binary's path there."""
    src = workdir / "csplice.c"
    ex.write_text(src, source.read_text())
    binary = workdir / "csplice"
    r = ex.run([CC, *CFLAGS, "-o", str(binary), str(src)], timeout_s=120)
    if not r.ok:
        raise PathError(f"compiling csplice.c on {ex.name} with {CC} failed:\n{r.why()}")
    return binary


def csplice_argv(binary: Path, listen_port: int, target_port: int, listen_host: str = LOOPBACK,
                 target_host: str = LOOPBACK) -> list[str]:
    """The csplice command line (two ports on loopback, as its 2-argument form always was)."""
    argv = [str(binary), str(listen_port), str(target_port)]
    if (listen_host, target_host) != (LOOPBACK, LOOPBACK):
        argv += [listen_host, target_host]
    return argv


class ReferencePath(ForwardPath):
    name = "reference"
    description = "tools/csplice.c: minimal C splice forwarder (thread per direction, 1 MiB pipe)"
    ports_needed = 1

    def __init__(self) -> None:
        self._proc: Proc | None = None
        self._port: int | None = None
        self._host = LOOPBACK
        self._log: Path | None = None
        self._binary: Path | None = None
        self._edge: Executor = LOCAL

    def available(self) -> Availability:
        if not SOURCE.is_file():
            return Availability.no(f"{SOURCE} is missing")
        if shutil.which(CC) is None:
            return Availability.no(f"no C compiler ({CC}): apt-get install gcc libc6-dev")
        return Availability.yes()

    def prepare(self) -> None:
        self._binary = build_csplice()

    def start(self, setup: PathSetup) -> Endpoint:
        edge = self._edge = setup.site.edge
        if not isinstance(edge, LocalExecutor):  # another host: build it there
            self._binary = build_csplice_on(edge, setup.workdir)
        elif self._binary is None:
            self.prepare()
        assert self._binary is not None
        self._port = setup.alloc_port()
        self._host = setup.site.listen_host
        self._log = setup.workdir / "csplice.log"
        argv = csplice_argv(self._binary, self._port, setup.target_port, self._host, setup.site.target_host)
        self._proc = edge.spawn(argv, log_path=self._log)
        return Endpoint(self._host, self._port)

    def ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        assert self._proc is not None and self._port is not None and self._log is not None
        wait_process_accepts(self._proc, self._port, timeout_s, "csplice", self._log, self._edge, self._host)

    def stop(self) -> None:
        stop_all(self._proc)

    def forwarder_pids(self) -> list[int]:
        return [self._proc.pid] if self._proc is not None and self._proc.poll() is None else []

    def describe(self) -> dict[str, Any]:
        return {"binary": str(self._binary) if self._binary else None, "source": str(SOURCE)}
