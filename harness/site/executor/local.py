"""Executors for this machine: LocalExecutor (as the harness itself) and NetnsExecutor (in a namespace).

Both start children through harness.site.procs (own session, PR_SET_PDEATHSIG,
stopped by PID), so a Proc is a subprocess.Popen and the CPU time, listener
checks and stops work exactly as on loopback. NetnsExecutor prefixes every
command with `ip netns exec NS`, which execs the command in place: the PID
the harness holds is the command's own.

Listener checks read /proc/PID/net/{tcp,udp} of the process in question,
which shows the sockets of that process's network namespace; the harness
never has to enter the namespace to see them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from harness.site import procs
from harness.site.executor.base import Completed, Executor, ExecutorError, Proc
from harness.site.executor.nsenter import entered_netns
from harness.site.netutil import wait_listening, wait_udp_bound

IP = shutil.which("ip") or "/usr/sbin/ip"
# Root's PATH may lack the sbin directories on some systems; tools like sshd and nft live there.
SBIN_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")


def find_local_executable(name: str) -> str | None:
    """A console script of this venv first (the code under test), then PATH, then the sbin dirs."""
    local = Path(sys.executable).parent / name
    if local.is_file() and os.access(local, os.X_OK):
        return str(local)
    found = shutil.which(name)
    if found is not None:
        return found
    for d in SBIN_DIRS:
        p = Path(d, name)
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return None


class LocalExecutor(Executor):
    """This machine, the harness's own network namespace."""

    kind = "local"

    @property
    def name(self) -> str:
        return "local"

    @property
    def python(self) -> str:
        return sys.executable

    @property
    def netns(self) -> str | None:
        """The named namespace commands run in (None: the harness's own)."""
        return None

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """The command line that runs argv in this executor's place."""
        return [str(a) for a in argv]

    def spawn(self, argv: Sequence[str], *, log_path: Path | None = None, env: Mapping[str, str] | None = None,
              cwd: Path | None = None, capture: bool = False) -> subprocess.Popen:
        return procs.spawn(self.wrap(argv), log_path=log_path, env=env, cwd=cwd, capture=capture)

    def run(self, argv: Sequence[str], *, timeout_s: float = 30.0, input: str | None = None,
            env: Mapping[str, str] | None = None) -> Completed:
        full = self.wrap(argv)
        try:
            p = subprocess.run(full, input=input, capture_output=True, text=True, timeout=timeout_s,
                               env=dict(env) if env is not None else None)
        except subprocess.TimeoutExpired:
            raise ExecutorError(f"{self.name}: `{' '.join(full)}` did not finish within {timeout_s:.0f} s") from None
        except FileNotFoundError as e:
            return Completed(tuple(full), 127, "", f"{e.filename}: not found")
        return Completed(tuple(full), p.returncode, p.stdout, p.stderr)

    def which(self, name: str) -> str | None:
        return find_local_executable(name)

    def write_text(self, path: Path, text: str, private: bool = False) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if not private:
            Path(path).write_text(text)
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)  # an existing file keeps its mode through O_CREAT
        with os.fdopen(fd, "w") as f:
            f.write(text)

    def read_text(self, path: Path) -> str:
        try:
            return Path(path).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def mirror_dir(self, local_dir: Path) -> Path:
        local_dir.mkdir(parents=True, exist_ok=True)
        return local_dir

    def wait_listening(self, port: int, proc: Proc, timeout_s: float) -> None:
        wait_listening(port, timeout_s, alive=lambda: proc.poll() is None, pid=proc.pid)

    def wait_udp_bound(self, port: int, ps: Sequence[Proc], timeout_s: float) -> None:
        pids = [p.pid for p in ps]
        pids += [c for p in pids for c in procs.descendants(p)]
        wait_udp_bound(port, timeout_s, alive=lambda: all(p.poll() is None for p in ps), pids=pids)

    def tree_cpu_seconds(self, pid: int) -> float | None:
        return procs.tree_cpu_seconds(pid)

    def descendants(self, pid: int) -> list[int]:
        return procs.descendants(pid)

    def stop_pids(self, pids: Sequence[int]) -> None:
        procs.stop_pids(pids)

    def connect(self, host: str, port: int, timeout_s: float = 10.0) -> socket.socket:
        with entered_netns(self.netns):
            return socket.create_connection((host, port), timeout=timeout_s)


class NetnsExecutor(LocalExecutor):
    """This machine, inside the named network namespace (`ip netns exec NS ...`)."""

    kind = "netns"

    def __init__(self, netns: str) -> None:
        self._netns = netns

    @property
    def name(self) -> str:
        return f"netns:{self._netns}"

    @property
    def netns(self) -> str | None:
        return self._netns

    def describe(self) -> dict:
        return {**super().describe(), "netns": self._netns}

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return [IP, "netns", "exec", self._netns, *(str(a) for a in argv)]


LOCAL = LocalExecutor()
