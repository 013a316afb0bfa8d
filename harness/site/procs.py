"""Child processes the harness starts (and always stops), and their CPU time from /proc.

Every child is started in its own session, so a Ctrl-C on the terminal reaches
only the harness, which then stops its children in order (forwarder rules
first, then processes). PR_SET_PDEATHSIG makes the kernel send SIGTERM to a
child if the harness itself dies without cleaning up (e.g. SIGKILL).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("harness.site.procs")

# Grace period between SIGTERM and SIGKILL. portunus-standalone drains for
# shutdown_drain_secs (the harness writes 0) and then exits; 5 s covers a
# slow interpreter shutdown on a loaded 2-core machine.
STOP_GRACE_S = 5.0

_PR_SET_PDEATHSIG = 1
# Every child spawn() started and stop() has not reaped yet: the safety net
# stop_all() uses when a run is interrupted at an awkward moment. Keyed by
# object identity: remote processes (harness.site.executor.ssh) register here too,
# and their pids belong to another host's pid space.
_LIVE: dict[int, Any] = {}
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:
        pass


def spawn(argv: Sequence[str], *, log_path: Path | None = None, env: Mapping[str, str] | None = None,
          cwd: Path | None = None, capture: bool = False) -> subprocess.Popen:
    """Start a child in its own session.

    Output: capture=True -> stdout and stderr are pipes (caller must communicate());
    else log_path -> both appended there; else discarded.
    """
    log_file = None
    if capture:
        out, err = subprocess.PIPE, subprocess.PIPE
    elif log_path is not None:
        log_file = open(log_path, "ab")  # noqa: SIM115 - the child inherits it; closed below
        out, err = log_file.fileno(), subprocess.STDOUT
    else:
        out, err = subprocess.DEVNULL, subprocess.DEVNULL
    try:
        proc = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            env=dict(env) if env is not None else None, cwd=cwd,
            start_new_session=True, preexec_fn=_die_with_parent,
        )
    finally:
        if log_file is not None:
            log_file.close()
    _LIVE[id(proc)] = proc
    log.debug("started pid %d: %s", proc.pid, " ".join(argv))
    return proc


def register(proc: Any) -> None:
    """Track a process started elsewhere (a remote one with a stop() of its own) for stop_all()."""
    _LIVE[id(proc)] = proc


def unregister(proc: Any) -> None:
    _LIVE.pop(id(proc), None)


def stop(proc: Any, sig: int = signal.SIGTERM, grace_s: float = STOP_GRACE_S) -> int | None:
    """Stop a child we started (its process group), escalating to SIGKILL; returns its exit code.

    A process that is not a local Popen (harness.site.executor.ssh.RemoteProcess) stops itself.
    """
    if proc is None:
        return None
    if not isinstance(proc, subprocess.Popen):
        return proc.stop(sig, grace_s)
    if proc.poll() is None:
        _signal_group(proc.pid, sig)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            log.warning("pid %d ignored signal %d for %.0f s; killing it", proc.pid, sig, grace_s)
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
    else:
        # The leader is gone, but something it started may still hold the group.
        _signal_group(proc.pid, signal.SIGKILL)
    _LIVE.pop(id(proc), None)
    return proc.returncode


def stop_pids(pids: Sequence[int], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM processes we know by pid only (descendants of a child of ours), SIGKILL after grace_s.

    For grandchildren that left their parent's process group; pids come from a
    scan of our own children's descendants moments before, not from a name.
    """
    alive = [p for p in pids if _signal_pid(p, signal.SIGTERM)]
    deadline = time.monotonic() + grace_s
    while alive and time.monotonic() < deadline:
        time.sleep(0.02)
        alive = [p for p in alive if pid_alive(p)]
    for p in alive:
        _signal_pid(p, signal.SIGKILL)


def _signal_pid(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def pid_alive(pid: int) -> bool:
    """True while pid exists and is not a zombie (a zombie is someone else's to reap)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat[stat.rindex(")") + 2:][:1] != "Z"


def cleanup_selects(owner_pid: int, *, include_live: bool = False, only_pid: int | None = None) -> bool:
    """Whether a cleanup takes what the harness with `owner_pid` left behind (its chains, tables,
    namespaces, scratch dirs): with `only_pid`, that one harness's and nothing else, running or not;
    otherwise what gone harnesses left (and this process's own), every harness's with `include_live`."""
    if only_pid is not None:
        return owner_pid == only_pid
    return include_live or owner_pid == os.getpid() or not os.path.exists(f"/proc/{owner_pid}")


def live_children() -> list[Any]:
    """Children started by spawn() and not yet stopped."""
    return list(_LIVE.values())


def stop_all() -> None:
    """Stop every child spawn() started that is still registered (newest first)."""
    for proc in reversed(list(_LIVE.values())):
        stop(proc)


def _signal_group(pgid: int, sig: int) -> None:
    # Children are session leaders (start_new_session), so their pgid is their pid.
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        try:
            os.kill(pgid, sig)
        except ProcessLookupError:
            pass


def parse_proc_stat_cpu_ticks(text: str) -> int:
    """utime + stime (clock ticks) from the text of /proc/PID/stat.

    For a process (thread-group leader) the kernel sums all its threads,
    including threads that have already exited.
    """
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    rest = text[text.rindex(")") + 2:].split()
    # rest[0] is field 3 (state), so field 14 (utime) is rest[11], field 15 (stime) rest[12].
    return int(rest[11]) + int(rest[12])


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user+system, all threads) a live process has used; None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return parse_proc_stat_cpu_ticks(text) / _CLK_TCK


def parse_proc_stat_tree_ticks(text: str) -> int:
    """utime + stime + cutime + cstime (clock ticks) from the text of /proc/PID/stat.

    cutime/cstime hold the CPU of children this process has already reaped
    (waited for): a fork-per-connection forwarder (socat, sshd) moves its
    finished connections' CPU there.
    """
    rest = text[text.rindex(")") + 2:].split()
    # Fields 14-17 (utime, stime, cutime, cstime) are rest[11:15].
    return sum(int(x) for x in rest[11:15])


def parse_proc_stat_reaped_ticks(text: str) -> int:
    """cutime + cstime (clock ticks) from the text of /proc/PID/stat: CPU of reaped children."""
    rest = text[text.rindex(")") + 2:].split()
    return int(rest[13]) + int(rest[14])


def cpu_clock_id(pid: int) -> int:
    """The clock id of another process's CPU-time clock (what clock_getcpuclockid(3) returns:
    the kernel's MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED))."""
    return ((~pid) << 3) | 2


def process_cpu_seconds(pid: int) -> float | None:
    """utime+stime of a live process, all threads (exited ones too), with nanosecond resolution.

    The process's CPU-time clock reads the scheduler's sum_exec_runtime, the
    quantity /proc/PID/stat's utime+stime are scaled to, without their
    rounding to clock ticks (10 ms): a 0.1 s sample is then exact to well
    under 1%, where ticks would be +-10%. None if the process is gone.
    """
    try:
        return time.clock_gettime(cpu_clock_id(pid))
    except OSError:  # EINVAL: no such process (any more)
        return None


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of pid and every descendant, live or already reaped; None if pid is gone.

    Each process is counted once: live ones by their own CPU-time clock
    (process_cpu_seconds: utime+stime at nanosecond resolution), reaped ones
    through their reaper's cutime+cstime (clock ticks). A child reaped exactly
    between the reads can count twice or not at all (a window of
    microseconds, against runs of seconds). For a process without children
    this equals cpu_seconds(pid), without its rounding to ticks.
    """
    total = 0.0
    for i, p in enumerate([pid, *descendants(pid)]):
        try:
            reaped = parse_proc_stat_reaped_ticks(Path(f"/proc/{p}/stat").read_text())
        except (FileNotFoundError, ProcessLookupError):
            if i == 0:
                return None
            continue  # exited and reaped since the scan: its CPU is in its reaper's cutime now
        own = process_cpu_seconds(p)
        if own is None:
            if i == 0:
                return None
            continue
        total += own + reaped / _CLK_TCK
    return total


@dataclass(frozen=True)
class HostCpu:
    """Cumulative CPU time of the whole host, all cores, from /proc/stat's `cpu` line (seconds).

    busy_s = user + nice + system + irq + softirq: everything the cores did
    that was not idle, iowait or stolen by the hypervisor (guest time is
    already inside user). softirq_s on its own because loopback and veth
    do most of their packet processing there (see harness/README.md, "Whole-host CPU").
    """

    busy_s: float
    softirq_s: float

    def __sub__(self, earlier: HostCpu) -> HostCpu:
        return HostCpu(self.busy_s - earlier.busy_s, self.softirq_s - earlier.softirq_s)


def parse_proc_stat_host(text: str, clk_tck: int = _CLK_TCK) -> HostCpu:
    """HostCpu from the text of /proc/stat (fields of the aggregate `cpu` line, in ticks)."""
    for line in text.splitlines():
        if line.startswith("cpu "):
            f = [int(x) for x in line.split()[1:8]]
            user, nice, system, _idle, _iowait, irq, softirq = f
            return HostCpu((user + nice + system + irq + softirq) / clk_tck, softirq / clk_tck)
    raise ValueError("no aggregate 'cpu' line in /proc/stat")


def host_cpu() -> HostCpu:
    """This host's cumulative CPU time (all cores) now."""
    return parse_proc_stat_host(Path("/proc/stat").read_text())


def parse_stat_pid(text: str) -> int:
    """The pid (field 1) from the text of /proc/PID/stat."""
    return int(text.split(" ", 1)[0])


def children_map(stats: Mapping[int, str]) -> dict[int, list[int]]:
    """{ppid: [child pids]} from {pid: /proc/PID/stat text} (unparsable entries skipped)."""
    children: dict[int, list[int]] = {}
    for pid, text in stats.items():
        try:
            children.setdefault(parse_ppid(text), []).append(pid)
        except (ValueError, IndexError):
            continue
    return children


def descendants_in(pid: int, children: Mapping[int, list[int]]) -> list[int]:
    """Every descendant of pid in a {ppid: [children]} map."""
    out: list[int] = []
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def tree_ticks_in(pid: int, stats: Mapping[int, str]) -> int | None:
    """tree_cpu_seconds' tick count from a snapshot {pid: stat text} (e.g. of a remote host)."""
    if pid not in stats:
        return None
    ticks = parse_proc_stat_tree_ticks(stats[pid])
    for c in descendants_in(pid, children_map(stats)):
        ticks += parse_proc_stat_tree_ticks(stats[c])
    return ticks


def parse_ppid(text: str) -> int:
    """Parent pid (field 4) from the text of /proc/PID/stat."""
    return int(text[text.rindex(")") + 2:].split()[1])


def descendants(pid: int) -> list[int]:
    """Pids of all live descendants of pid (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ppid = parse_ppid(Path(entry.path, "stat").read_text())
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    return descendants_in(pid, children)


def wait_exit(proc: subprocess.Popen, timeout_s: float) -> bool:
    """True if proc exits within timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return True
        time.sleep(0.02)
    return proc.poll() is not None
