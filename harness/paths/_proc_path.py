"""Shared plumbing for paths whose forwarder is a process we start (through the site's edge executor)."""

from __future__ import annotations

from pathlib import Path

from harness.errors import PathError
from harness.site import procs
from harness.site.executor.base import Executor, Proc, log_tail_of
from harness.site.executor.local import LOCAL, find_local_executable
from harness.site.netutil import LOOPBACK

# Python forwarders import their package and bind within ~1 s; a loaded
# 2-core machine running the other helpers' tests can take several times that.
READY_TIMEOUT_S = 30.0


def find_executable(name: str) -> str | None:
    """A console script of this venv first (the forwarder under test), then PATH."""
    return find_local_executable(name)


def log_tail(path: Path, n_chars: int = 1500, ex: Executor = LOCAL) -> str:
    return log_tail_of(ex, path, n_chars)


def wait_process_accepts(proc: Proc, port: int, timeout_s: float, what: str, log_path: Path,
                         ex: Executor = LOCAL, host: str = LOOPBACK) -> None:
    """Wait until proc owns a LISTEN socket on port; PathError with the log tail otherwise.

    Checked through /proc (or `ss` on a remote host), not by connecting (see harness.paths.base).
    """
    try:
        ex.wait_listening(port, proc, timeout_s)
    except TimeoutError as e:
        rc = proc.poll()
        state = f"exited with code {rc}" if rc is not None else "still running"
        where = "" if ex is LOCAL else f" ({ex.name})"
        raise PathError(f"{what} not ready on {host}:{port}{where} ({e}; process {state}). "
                        f"Log {log_path}:\n{log_tail(log_path, ex=ex)}") from None


def stop_all(*ps: Proc | None) -> None:
    """Stop processes in the given order (first = closest to the data)."""
    for p in ps:
        procs.stop(p)
