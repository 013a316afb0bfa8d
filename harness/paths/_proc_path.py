"""Shared plumbing for paths whose forwarder is a process we start."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from harness import procs
from harness.errors import PathError
from harness.netutil import wait_listening

# Python forwarders import their package and bind within ~1 s; a loaded
# 2-core machine running the other helpers' tests can take several times that.
READY_TIMEOUT_S = 30.0


def find_executable(name: str) -> str | None:
    """A console script of this venv first (the forwarder under test), then PATH."""
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return shutil.which(name)


def log_tail(path: Path, n_chars: int = 1500) -> str:
    try:
        return path.read_text(errors="replace")[-n_chars:].strip()
    except FileNotFoundError:
        return ""


def wait_process_accepts(proc: subprocess.Popen, port: int, timeout_s: float, what: str, log_path: Path) -> None:
    """Wait until proc owns a LISTEN socket on port; PathError with the log tail otherwise.

    Checked through /proc, not by connecting (see harness.paths.base).
    """
    try:
        wait_listening(port, timeout_s, alive=lambda: proc.poll() is None, pid=proc.pid)
    except TimeoutError as e:
        rc = proc.poll()
        state = f"exited with code {rc}" if rc is not None else "still running"
        raise PathError(f"{what} not ready on 127.0.0.1:{port} ({e}; process {state}). "
                        f"Log {log_path}:\n{log_tail(log_path)}") from None


def stop_all(*ps: subprocess.Popen | None) -> None:
    """Stop processes in the given order (first = closest to the data)."""
    for p in ps:
        procs.stop(p)
