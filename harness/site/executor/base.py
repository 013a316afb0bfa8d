"""The one interface for "run this over there": processes, files, listeners, CPU, connections.

A benchmark role (the client, the edge that forwards, the target, the
control server) lives on an Executor. Paths and drivers never call
subprocess or /proc directly for a role's work: they ask the role's
executor, so the same experiment runs on loopback (LocalExecutor), across
network namespaces (NetnsExecutor) or on real hosts (SshExecutor).

    ex.spawn(argv, log_path=..)  -> Proc      # started in its own session; stopped by procs.stop(proc)
    ex.run(argv, timeout_s=..)   -> Completed # short commands (iptables, nft, sysctl, ip)
    ex.which(name)               -> path on that host, or None
    ex.write_text / read_text    # configs and logs, on that host
    ex.mirror_dir(local_dir)     # where that host keeps the files of a local scratch dir
    ex.wait_listening(port, proc, timeout_s)      # never by connecting (see harness.paths.base)
    ex.wait_udp_bound(port, procs, timeout_s)
    ex.tree_cpu_seconds(pid)     # CPU of a process tree on that host (harness.site.procs semantics)
    ex.connect(host, port, timeout_s) -> socket   # a TCP connection from that host's network position
    ex.close()

A Proc is a subprocess.Popen for local kinds; remote ones implement the same
small surface (pid, poll, wait, returncode, communicate) plus stop().
"""

from __future__ import annotations

import abc
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol


class Proc(Protocol):
    """What the harness uses of a started process (subprocess.Popen has all of it)."""

    pid: int
    returncode: int | None

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def communicate(self, input: bytes | None = None, timeout: float | None = None) -> tuple[Any, Any]: ...


@dataclass(frozen=True)
class Completed:
    """A finished short command: exit code and text output."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def why(self) -> str:
        """The command's complaint, for error messages."""
        return (self.stderr.strip() or self.stdout.strip())[-800:]


class ExecutorError(Exception):
    """An executor cannot do what was asked (connection lost, command missing, ...)."""


class Executor(abc.ABC):
    """Runs the harness's work for one role, on some host and in some network namespace."""

    # "local" | "netns" | "ssh": how it reaches its host (recorded in result headers).
    kind: str = ""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """Short label: 'local', 'netns:pt-edge', 'ssh:bench@192.0.2.10'."""

    @property
    def python(self) -> str:
        """The interpreter that runs the harness's child modules (probe, echo server) there."""
        raise ExecutorError(f"{self.name}: no Python interpreter configured for harness child processes")

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name}

    @abc.abstractmethod
    def spawn(self, argv: Sequence[str], *, log_path: Path | None = None, env: Mapping[str, str] | None = None,
              cwd: Path | None = None, capture: bool = False) -> Proc:
        """Start argv in its own session there; output to log_path (appended), pipes (capture) or nowhere.

        env, when given, is the whole environment (as subprocess.Popen's env).
        """

    @abc.abstractmethod
    def run(self, argv: Sequence[str], *, timeout_s: float = 30.0, input: str | None = None,
            env: Mapping[str, str] | None = None) -> Completed:
        """Run a short command there to completion (raises ExecutorError on timeout)."""

    @abc.abstractmethod
    def which(self, name: str) -> str | None:
        """Where `name` is on that host (harness venv first for local kinds), or None."""

    @abc.abstractmethod
    def write_text(self, path: Path, text: str, private: bool = False) -> None:
        """Write a file there (private: mode 0600 from the start, for files that hold secrets)."""

    @abc.abstractmethod
    def read_text(self, path: Path) -> str:
        """Read a file there ('' if it does not exist)."""

    @abc.abstractmethod
    def mirror_dir(self, local_dir: Path) -> Path:
        """The directory there that holds the files of local scratch dir local_dir (created)."""

    @abc.abstractmethod
    def wait_listening(self, port: int, proc: Proc, timeout_s: float) -> None:
        """Block until proc owns a TCP LISTEN socket on port there (TimeoutError otherwise)."""

    @abc.abstractmethod
    def wait_udp_bound(self, port: int, procs: Sequence[Proc], timeout_s: float) -> None:
        """Block until one of procs (or a descendant) holds an unconnected UDP socket on port."""

    @abc.abstractmethod
    def tree_cpu_seconds(self, pid: int) -> float | None:
        """CPU seconds of pid and all its descendants, live or reaped; None if pid is gone."""

    @abc.abstractmethod
    def descendants(self, pid: int) -> list[int]:
        """Pids of the live descendants of pid there."""

    @abc.abstractmethod
    def stop_pids(self, pids: Sequence[int]) -> None:
        """SIGTERM then SIGKILL processes there known by pid (strays of a child of ours, e.g. sshd sessions)."""

    @abc.abstractmethod
    def connect(self, host: str, port: int, timeout_s: float = 10.0) -> socket.socket:
        """A connected TCP socket to host:port as seen from that host's network (e.g. its loopback)."""

    def close(self) -> None:
        """Release connections; processes are stopped by their owners, not here."""
        return None


def log_tail_of(ex: Executor, path: Path | None, n_chars: int = 1500) -> str:
    """The end of a log file there, for error messages."""
    if path is None:
        return ""
    try:
        return ex.read_text(path)[-n_chars:].strip()
    except (OSError, ExecutorError):
        return ""


def completed_from(proc: subprocess.CompletedProcess) -> Completed:
    return Completed(tuple(str(a) for a in proc.args), proc.returncode, proc.stdout or "", proc.stderr or "")
