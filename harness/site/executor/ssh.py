"""SshExecutor: a role on another host, driven over one SSH connection (asyncssh).

Why this module is longer than ~400 lines: it is one class implementing the
whole Executor interface (processes, commands, files, listeners, CPU,
connections) over one connection and its event loop; its pure command-line
and parsing helpers are already apart (ssh_shell.py).

Why asyncssh (and not Fabric/Paramiko): it is pure Python and actively
maintained (releases every few months), needs no system ssh client or
config, gives exit codes and separate stdout/stderr per command, port
forwarding for the harness's own connections (operator API calls), and can
run over a socket the harness opened itself (`sock=`), which is how a lab
host inside a network namespace is reached. Fabric adds a task layer we do
not need over Paramiko's thread-per-channel model. asyncssh is asynchronous;
the harness is not: one event loop runs in a daemon thread per executor and
every call waits for its result.

Remote processes:
- started as `exec sh -c 'echo $$ >&2; exec CMD [>>LOG 2>&1]'`: the first
  line of stderr is the process's pid, which is also its process group
  (sshd makes each session's process a session leader, and every `exec`
  keeps the pid);
- stopped by pid over a second channel: `kill -TERM -- -PID`, then KILL
  after the grace period (closing an SSH channel does not stop a non-tty
  command);
- registered with harness.site.procs, so the runner's safety net stops them too.
Environment: a Popen-style env (the whole environment) is sent as the
difference from the harness's own (exports and unsets), never as a copy of
the local environment. Files: written with `cat >`, read with `cat`.
Listeners: `ss -Htlnp` / `ss -Huanp` there, matched by pid. CPU: one
snapshot of /proc/[0-9]*/stat there, the same tick arithmetic as locally
(harness.site.procs.tree_ticks_in). Scratch files go into one `mktemp -d`
directory there, removed by close().
"""

from __future__ import annotations

import asyncio
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar

from harness.define.topology import SshSpec
from harness.site import procs
from harness.site.executor.base import Completed, Executor, ExecutorError, Proc
from harness.site.executor.nsenter import entered_netns
from harness.site.executor.ssh_shell import (
    STAT_SNAPSHOT_CMD,
    env_delta,
    parse_ss_pids,
    parse_stat_snapshot,
    shell_prefix,
    spawn_command,
)

T = TypeVar("T")

# A remote command that does not start within this long is a dead connection, not a slow host.
SPAWN_TIMEOUT_S = 30.0
# Between listener checks: each one is a round trip over SSH.
POLL_INTERVAL_S = 0.1
STOP_GRACE_S = procs.STOP_GRACE_S
REMOTE_SCRATCH_PREFIX = "portunus-bench-remote-"


class _Loop:
    """An asyncio loop in a daemon thread; call() runs a coroutine there and waits."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def call(self, aw: Awaitable[T], timeout_s: float | None = None) -> T:
        async def _run() -> T:  # asyncssh.connect returns an awaitable wrapper, not a coroutine
            return await aw

        fut = asyncio.run_coroutine_threadsafe(_run(), self.loop)
        try:
            return fut.result(timeout_s)
        except TimeoutError:
            fut.cancel()
            raise

    def close(self) -> None:
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)
        if not self.loop.is_running():
            self.loop.close()


@dataclass
class RemoteProcess:
    """A process started by SshExecutor.spawn: the Popen surface the harness uses, plus stop()."""

    executor: SshExecutor
    argv: tuple[str, ...]
    pid: int
    _process: Any
    returncode: int | None = None
    _stdout: bytearray = field(default_factory=bytearray)
    _stderr: bytearray = field(default_factory=bytearray)
    _done: threading.Event = field(default_factory=threading.Event)

    @property
    def args(self) -> tuple[str, ...]:
        return self.argv

    def _finished(self, code: int) -> None:
        self.returncode = code
        self._done.set()

    def poll(self) -> int | None:
        return self.returncode if self._done.is_set() else None

    def wait(self, timeout: float | None = None) -> int:
        if not self._done.wait(timeout):
            raise subprocess.TimeoutExpired(list(self.argv), timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def communicate(self, input: bytes | None = None, timeout: float | None = None) -> tuple[bytes, bytes]:
        self.wait(timeout)
        return bytes(self._stdout), bytes(self._stderr)

    def stop(self, sig: int = signal.SIGTERM, grace_s: float = STOP_GRACE_S) -> int | None:
        """Signal the remote process group, escalate to SIGKILL after grace_s; returns the exit code."""
        try:
            if self.poll() is None:
                self.executor.signal_group(self.pid, sig)
                try:
                    self.wait(grace_s)
                except subprocess.TimeoutExpired:
                    self.executor.signal_group(self.pid, signal.SIGKILL)
                    try:
                        self.wait(grace_s)
                    except subprocess.TimeoutExpired:
                        pass
            else:
                # The leader is gone; something it started may still hold the group (as procs.stop).
                self.executor.signal_group(self.pid, signal.SIGKILL)
        except ExecutorError:
            pass  # the connection is gone: nothing more can be done from here
        finally:
            procs.unregister(self)
        return self.returncode


class SshExecutor(Executor):
    """One host over SSH. Connects lazily (first use) and keeps one connection."""

    kind = "ssh"

    def __init__(self, spec: SshSpec) -> None:
        self.spec = spec
        self._user = spec.user or _local_user()
        self._loop: _Loop | None = None
        self._conn: Any = None
        self._lock = threading.Lock()
        self._scratch: PurePosixPath | None = None
        self._forwards: dict[tuple[str, int], Any] = {}

    @property
    def name(self) -> str:
        return f"ssh:{self._user}@{self.spec.host}:{self.spec.port}"

    @property
    def python(self) -> str:
        return self.spec.python

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "host": self.spec.host, "port": self.spec.port, "user": self._user,
                "extra_path": list(self.spec.extra_path), "connect_netns": self.spec.connect_netns}

    # ---------------------------------------------------------------- connection

    def _ensure(self) -> tuple[_Loop, Any]:
        with self._lock:
            if self._conn is None:
                import asyncssh  # imported on first use: local and netns runs never need it

                loop = self._loop = self._loop or _Loop(f"ssh-{self.spec.host}")
                kw: dict[str, Any] = {"username": self._user, "port": self.spec.port,
                                      "connect_timeout": self.spec.connect_timeout_s}
                if self.spec.identity_file is not None:
                    kw["client_keys"] = [os.path.expanduser(self.spec.identity_file)]
                if self.spec.known_hosts is not None:
                    kw["known_hosts"] = os.path.expanduser(self.spec.known_hosts)
                sock = None
                if self.spec.connect_netns is not None:
                    sock = self._netns_socket()
                    kw["sock"] = sock
                try:
                    self._conn = loop.call(asyncssh.connect(self.spec.host, **kw),
                                           self.spec.connect_timeout_s + 5)
                except (OSError, asyncssh.Error, TimeoutError) as e:
                    if sock is not None:
                        sock.close()
                    raise ExecutorError(f"{self.name}: cannot connect: {e}") from None
            assert self._loop is not None
            return self._loop, self._conn

    def _netns_socket(self) -> socket.socket:
        assert self.spec.connect_netns is not None
        try:
            with entered_netns(self.spec.connect_netns):
                sock = socket.create_connection((self.spec.host, self.spec.port),
                                                timeout=self.spec.connect_timeout_s)
        except OSError as e:
            raise ExecutorError(f"{self.name}: cannot connect from namespace {self.spec.connect_netns}: {e}") from None
        sock.setblocking(False)
        return sock

    def close(self) -> None:
        with self._lock:
            conn, loop = self._conn, self._loop
        if conn is not None and loop is not None:
            if self._scratch is not None:
                try:
                    self.run(["rm", "-rf", "--", str(self._scratch)], timeout_s=30)
                except ExecutorError:
                    pass
            for listener in self._forwards.values():
                listener.close()

            async def _close() -> None:
                conn.close()
                await conn.wait_closed()

            try:
                loop.call(_close(), 10)
            except Exception:
                pass
        if loop is not None:
            loop.close()
        with self._lock:
            self._conn = None
            self._loop = None
            self._scratch = None
            self._forwards = {}

    # ---------------------------------------------------------------- commands

    def _prefix(self, env: Mapping[str, str] | None, cwd: str | None = None) -> str:
        sets, unsets = env_delta(env, os.environ)
        return shell_prefix(self.spec.extra_path, sets, unsets, cwd)

    def run(self, argv: Sequence[str], *, timeout_s: float = 30.0, input: str | None = None,
            env: Mapping[str, str] | None = None) -> Completed:
        loop, conn = self._ensure()
        cmd = self._prefix(env) + shlex.join(str(a) for a in argv)
        try:
            result = loop.call(conn.run(cmd, input=input, check=False), timeout_s)
        except TimeoutError:
            raise ExecutorError(f"{self.name}: `{cmd}` did not finish within {timeout_s:.0f} s") from None
        except Exception as e:  # asyncssh.Error, connection lost
            raise ExecutorError(f"{self.name}: `{cmd}` failed: {e}") from None
        # returncode: exit status, or minus the signal number; None if the channel closed without one.
        code = result.returncode if result.returncode is not None else -1
        return Completed(tuple(str(a) for a in argv), code, _text(result.stdout), _text(result.stderr))

    def _sh(self, script: str, timeout_s: float = 30.0, input: str | None = None) -> Completed:
        return self.run(["sh", "-c", script], timeout_s=timeout_s, input=input)

    def signal_group(self, pid: int, sig: int) -> None:
        """kill -SIG the process group pid there (or the process, if it leads no group).

        `env kill`: the kill(1) program (procps / util-linux); dash's builtin refuses `-- -PGID`.
        """
        n = int(sig)
        self._sh(f"env kill -s {n} -- -{pid} 2>/dev/null || env kill -s {n} {pid} 2>/dev/null; true")

    def spawn(self, argv: Sequence[str], *, log_path: Path | None = None, env: Mapping[str, str] | None = None,
              cwd: Path | None = None, capture: bool = False) -> RemoteProcess:
        loop, conn = self._ensure()
        argv = tuple(str(a) for a in argv)
        cmd = spawn_command(argv, self._prefix(env, str(cwd) if cwd is not None else None),
                            None if capture or log_path is None else str(log_path))
        holder: dict[str, RemoteProcess] = {}

        async def _start() -> RemoteProcess:
            process = await conn.create_process(cmd, encoding=None)
            process.stdin.write_eof()
            first = await asyncio.wait_for(process.stderr.readline(), SPAWN_TIMEOUT_S)
            try:
                pid = int(first.strip())
            except ValueError:
                rest = await process.stderr.read()
                process.close()
                raise ExecutorError(f"{self.name}: `{shlex.join(argv)}` did not start: "
                                    f"{(first + rest).decode(errors='replace').strip()[-500:]}") from None
            rp = RemoteProcess(self, argv, pid, process)
            holder["p"] = rp

            async def _pump(stream: Any, buf: bytearray, keep: bool) -> None:
                while True:
                    chunk = await stream.read(65536)
                    if not chunk:
                        return
                    if keep:
                        buf.extend(chunk)

            async def _watch() -> None:
                await asyncio.gather(_pump(process.stdout, rp._stdout, capture),
                                     _pump(process.stderr, rp._stderr, capture))
                completed = await process.wait(check=False)
                rp._finished(completed.returncode if completed.returncode is not None else -1)

            asyncio.ensure_future(_watch())
            return rp

        try:
            rp = loop.call(_start(), SPAWN_TIMEOUT_S + 5)
        except ExecutorError:
            raise
        except Exception as e:
            raise ExecutorError(f"{self.name}: cannot start `{shlex.join(argv)}`: {e}") from None
        procs.register(rp)
        return rp

    # ---------------------------------------------------------------- files

    def which(self, name: str) -> str | None:
        r = self._sh(f"command -v {shlex.quote(name)} || true")
        out = r.stdout.strip().splitlines()
        return out[0] if out else None

    def write_text(self, path: Path, text: str, private: bool = False) -> None:
        p = shlex.quote(str(path))
        write = f"(umask 077 && cat > {p} && chmod 600 -- {p})" if private else f"cat > {p}"
        r = self._sh(f"mkdir -p -- \"$(dirname -- {p})\" && {write}", input=text)
        if not r.ok:
            raise ExecutorError(f"{self.name}: cannot write {path}: {r.why()}")

    def read_text(self, path: Path) -> str:
        r = self.run(["cat", "--", str(path)])
        return r.stdout if r.ok else ""

    def scratch_root(self) -> PurePosixPath:
        """This executor's scratch directory there (made on first use, removed by close())."""
        if self._scratch is None:
            r = self.run(["mktemp", "-d", f"{self.spec.scratch_dir.rstrip('/')}/{REMOTE_SCRATCH_PREFIX}XXXXXX"])
            if not r.ok:
                raise ExecutorError(f"{self.name}: cannot make a scratch directory: {r.why()}")
            self._scratch = PurePosixPath(r.stdout.strip())
        return self._scratch

    def mirror_dir(self, local_dir: Path) -> Path:
        remote = self.scratch_root() / local_dir.name
        r = self.run(["mkdir", "-p", "--", str(remote)])
        if not r.ok:
            raise ExecutorError(f"{self.name}: cannot make {remote}: {r.why()}")
        return Path(str(remote))

    # ---------------------------------------------------------------- sockets and CPU

    def _wait_ss(self, ss_args: str, port: int, pids: Sequence[int], alive: Any, timeout_s: float,
                 what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            r = self._sh(f"ss {ss_args} 'sport = :{port}'")
            if parse_ss_pids(r.stdout) & set(pids):
                return
            if not alive():
                raise TimeoutError(f"the process that should {what} on port {port} exited")
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing {what}s on port {port} (pids {list(pids)}) on {self.spec.host} "
                                   f"after {timeout_s:.0f} s")
            time.sleep(POLL_INTERVAL_S)

    def wait_listening(self, port: int, proc: Proc, timeout_s: float) -> None:
        self._wait_ss("-Htlnp", port, [proc.pid], lambda: proc.poll() is None, timeout_s, "listen")

    def wait_udp_bound(self, port: int, ps: Sequence[Proc], timeout_s: float) -> None:
        pids = [p.pid for p in ps]
        pids += [c for p in list(pids) for c in self.descendants(p)]
        self._wait_ss("-Huanp", port, pids, lambda: all(p.poll() is None for p in ps), timeout_s, "receive")

    def _snapshot(self) -> tuple[int, dict[int, str]]:
        r = self._sh(STAT_SNAPSHOT_CMD)
        try:
            return parse_stat_snapshot(r.stdout)
        except ValueError as e:
            raise ExecutorError(f"{self.name}: cannot read /proc: {e}: {r.why()}") from None

    def tree_cpu_seconds(self, pid: int) -> float | None:
        clk, stats = self._snapshot()
        ticks = procs.tree_ticks_in(pid, stats)
        return None if ticks is None else ticks / clk

    def descendants(self, pid: int) -> list[int]:
        _, stats = self._snapshot()
        return procs.descendants_in(pid, procs.children_map(stats))

    def stop_pids(self, pids: Sequence[int]) -> None:
        if not pids:
            return
        ids = " ".join(str(int(p)) for p in pids)
        grace = int(STOP_GRACE_S)
        self._sh(f"kill -TERM {ids} 2>/dev/null; for i in $(seq {grace * 10}); do "
                 f"kill -0 {ids} 2>/dev/null || exit 0; sleep 0.1; done; kill -KILL {ids} 2>/dev/null; true",
                 timeout_s=STOP_GRACE_S + 10)

    def connect(self, host: str, port: int, timeout_s: float = 10.0) -> socket.socket:
        """Through a local port forward (127.0.0.1:ephemeral here -> host:port as that host sees it)."""
        loop, conn = self._ensure()
        key = (host, port)
        if key not in self._forwards:
            try:
                self._forwards[key] = loop.call(conn.forward_local_port("127.0.0.1", 0, host, port), timeout_s)
            except Exception as e:
                raise ExecutorError(f"{self.name}: cannot forward to {host}:{port}: {e}") from None
        local_port = self._forwards[key].get_port()
        return socket.create_connection(("127.0.0.1", local_port), timeout=timeout_s)


def _text(v: Any) -> str:
    if v is None:
        return ""
    return v.decode(errors="replace") if isinstance(v, bytes | bytearray) else str(v)


def _local_user() -> str:
    import getpass

    return getpass.getuser()
