"""`workers = N`: N worker processes, each one event loop, sharing listeners via SO_REUSEPORT.

The supervisor (`WorkerGroup`, in the `portunus-standalone` / `portunus-client`
process) forwards nothing itself. It offers the Forwarder's interface
(`apply`, `snapshot`, `active_connections`, `close`) and:

* opens the listening sockets: for each new (protocol, address, port), one
  socket per worker, all with SO_REUSEPORT, so the kernel spreads new
  connections (and UDP flows, by their 4-tuple) over the workers. Binding
  happens here, before any worker changes anything, so a reload that cannot
  bind is refused whole, exactly as with one worker. Each worker receives
  its sockets (SCM_RIGHTS) and the supervisor closes its copies: a worker
  that dies takes its sockets out of the group, and the kernel sends new
  connections to the others until it is restarted;
* keeps every rule's and owner's limits in shared memory (shared.py), so a
  limit holds in total across workers;
* answers `snapshot` with the sum of the workers' counters.

Workers start with `spawn` (a fresh interpreter, no fork of a process that
may run gRPC threads), ignore SIGINT/SIGHUP (a Ctrl-C in a terminal reaches
the whole process group: the supervisor decides), die with the supervisor
(PR_SET_PDEATHSIG), and are restarted if they die on their own.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Sequence
from multiprocessing import connection as mp_connection
from multiprocessing.reduction import recvfds, sendfds
from typing import Any

from portunus.config import Owner, Rule
from portunus.dataplane.forwarder import (
    BindError,
    Forwarder,
    open_tcp_listener,
    socket_keys,
    splice_disabled_by_env,
)
from portunus.dataplane.pipes import SPLICE_AVAILABLE
from portunus.dataplane.shared import SharedLimits, SlotTable, slot_name, spawn_context
from portunus.dataplane.stats import merge_snapshots
from portunus.limits import LIMIT_SET_CELLS, QUOTA_CELL

log = logging.getLogger("portunus.workers")

# Longest wait for a worker to answer a control message (apply, snapshot).
REPLY_TIMEOUT_S = 30.0
# A worker that dies is restarted after this pause (a crash loop does not spin).
RESTART_DELAY_S = 1.0
_PR_SET_PDEATHSIG = 1

Key = tuple[str, str, int]


def resolve_workers(value: int | str | None) -> int:
    """`workers` setting -> a count: an int, or "auto" = the CPUs this process may use."""
    if value in (None, "auto"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, int(value))


def open_reuseport_socket(key: Key, rule: Rule) -> socket.socket:
    proto, addr, port = key
    if proto == "tcp":
        return open_tcp_listener(addr, port, rule.tcp_keepalive_secs, reuse_port=True)
    from portunus.dataplane.udp import open_udp_listener
    return open_udp_listener(addr, port, reuse_port=True)


class _Worker:
    """The supervisor's handle on one worker process."""

    def __init__(self, ctx: Any, index: int, shared: SharedLimits, disable_splice: bool,
                 log_settings: tuple[str, str, str]) -> None:
        self.index = index
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=worker_main, name=f"portunus-worker-{index}",
                                   args=(index, child, shared, disable_splice, log_settings), daemon=True)
        self.process.start()
        child.close()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=os.dup(self.conn.fileno()))
        self.keys: set[Key] = set()  # listeners this worker holds

    def request(self, msg: tuple, fds: Sequence[int] = ()) -> Any:
        self.conn.send(msg)
        if fds:
            sendfds(self.sock, list(fds))
        if not self.conn.poll(REPLY_TIMEOUT_S):
            raise TimeoutError(f"worker {self.index} (pid {self.process.pid}) did not answer {msg[0]!r}")
        reply = self.conn.recv()
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def close_handles(self) -> None:
        for c in (self.conn, self.sock):
            try:
                c.close()
            except OSError:
                pass


class WorkerGroup:
    """N worker processes behind the Forwarder interface."""

    def __init__(self, workers: int, *, disable_splice: bool | None = None,
                 log_settings: tuple[str, str, str] = ("info", "pretty", "portunus")) -> None:
        if disable_splice is None:
            disable_splice = splice_disabled_by_env()
        self.splice_enabled = SPLICE_AVAILABLE and not disable_splice
        self._disable_splice = disable_splice
        self._log_settings = log_settings
        self._ctx = spawn_context()
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        try:
            self._shared = SharedLimits(self._ctx)  # starts the resource tracker: see _start
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        self._slot_table = SlotTable(self._shared)
        self._lock = threading.RLock()
        self._closing = False
        self._rules: list[Rule] = []
        self._owners: list[Owner] = []
        self._slots: dict[str, int] = {}
        self._workers = [self._start(i) for i in range(workers)]
        self._watcher = threading.Thread(target=self._watch, name="worker-watch", daemon=True)
        self._watcher.start()

    @property
    def workers(self) -> int:
        return len(self._workers)

    def pids(self) -> list[int]:
        return [w.process.pid for w in self._workers]

    def _start(self, index: int) -> _Worker:
        # multiprocessing's resource tracker UNBLOCKS SIGINT/SIGTERM in the calling thread
        # after starting itself; the runtime takes those signals with sigwait, so the
        # mask it had must come back, or a SIGTERM would kill the process outright.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
        try:
            return _Worker(self._ctx, index, self._shared, self._disable_splice, self._log_settings)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)

    # ------------------------------------------------------------ rules

    def rules(self) -> list[Rule]:
        with self._lock:
            return list(self._rules)

    def apply(self, rules: Sequence[Rule], owners: Sequence[Owner] = (), *,
              atomic: bool = True) -> dict[str, str | None]:
        """Same contract as Forwarder.apply, for every worker at once."""
        with self._lock:
            if self._closing:
                raise RuntimeError("forwarder is closing")
            current = set().union(*(w.keys for w in self._workers)) if self._workers else set()
            opened: dict[Key, list[socket.socket]] = {}
            failures: dict[str, str] = {}
            for rule in rules:
                for key in socket_keys(rule):
                    if key in current or key in opened:
                        continue
                    socks: list[socket.socket] = []
                    try:
                        for _ in self._workers:
                            socks.append(open_reuseport_socket(key, rule))
                    except OSError as e:
                        for s in socks:
                            s.close()
                        failures[rule.name] = f"cannot listen on {key[0]} {key[1]}:{key[2]}: {e.strerror or e}"
                        break
                    opened[key] = socks
            try:
                if failures and atomic:
                    raise BindError(failures)
                active = [r for r in rules if r.name not in failures]
                names = {slot_name("rule", r.name) for r in active}
                names |= {slot_name("owner", o.name) for o in owners}
                names |= {slot_name("owner", r.owner) for r in active if r.owner}
                self._slots = self._slot_table.assign(names)
                needed = {k for r in active for k in socket_keys(r)}
                result: dict[str, str | None] = {}
                for i, w in enumerate(self._workers):
                    keys = [k for k in opened if k in needed]
                    fds = [opened[k][i].fileno() for k in keys]
                    result = w.request(("apply", active, list(owners), self._slots, keys), fds)
                    w.keys = needed
            finally:
                for socks in opened.values():  # each worker holds its own now
                    for s in socks:
                        s.close()
            self._rules, self._owners = active, list(owners)
            result.update(failures)
            return result

    # ------------------------------------------------------------ state

    def snapshot(self) -> dict[str, Any]:
        """Per-rule counters summed over the workers, JSON-ready."""
        with self._lock:
            workers = list(self._workers)
            snaps = [w.request(("snapshot",)) for w in workers]
        merged = merge_snapshots(snaps)
        merged["splice_enabled"] = self.splice_enabled
        merged["workers"] = len(snaps)
        # How the kernel spread the load (SO_REUSEPORT hashes each connection's addresses).
        merged["per_worker"] = [
            {"pid": w.process.pid,
             "connections_total": sum(r.get("connections_total", 0) for r in snap["rules"].values()),
             "connections_active": sum(r.get("connections_active", 0) for r in snap["rules"].values())}
            for w, snap in zip(workers, snaps, strict=True)]
        return merged

    def active_connections(self) -> int:
        with self._lock:
            return sum(w.request(("active",)) for w in self._workers)

    def _quota_index(self, owner: str) -> int | None:
        """Index of an owner's quota counter in the shared cells (None: no such owner with a quota)."""
        if not any(o.name == owner and o.quota is not None for o in self._owners):
            return None
        slot = self._slots.get(slot_name("owner", owner))
        return None if slot is None else slot * LIMIT_SET_CELLS + QUOTA_CELL

    def quota_used(self) -> dict[str, int]:
        """{owner: bytes charged to its quota}: read straight from the shared counters."""
        with self._lock:
            out = {}
            for o in self._owners:
                i = self._quota_index(o.name)
                if i is not None:
                    out[o.name] = int(self._shared.cells[i])
            return out

    def set_quota_used(self, owner: str, used: int, *, reset: bool = False) -> None:
        """Same contract as Forwarder.set_quota_used, on the counter every worker charges."""
        with self._lock:
            i = self._quota_index(owner)
            if i is None:
                return
            with self._shared.bucket_lock:
                cells = self._shared.cells
                if reset or cells[i] < used:
                    cells[i] = float(used)

    def close(self, drain_s: float = 0.0) -> None:
        """Every worker stops accepting, drains for up to `drain_s`, resets the rest, exits."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            workers = list(self._workers)
        for w in workers:
            try:
                w.conn.send(("close", drain_s))
            except OSError:
                pass
        deadline = time.monotonic() + drain_s + 10.0
        for w in workers:
            w.process.join(max(0.1, deadline - time.monotonic()))
            if w.process.is_alive():  # our own child, by its PID
                log.warning("worker %d (pid %s) did not stop: killing it", w.index, w.process.pid)
                w.process.kill()
                w.process.join(5)
            w.close_handles()

    # ------------------------------------------------------------ supervision

    def _watch(self) -> None:
        while True:
            with self._lock:
                if self._closing:
                    return
                sentinels = {w.process.sentinel: w for w in self._workers}
            ready = mp_connection.wait(list(sentinels), timeout=1.0)
            for s in ready:
                w = sentinels[s]
                with self._lock:
                    if self._closing or w not in self._workers:
                        continue
                    w.process.join(1.0)  # reap it; its exit code says how it ended
                    log.error("worker %d (pid %s) exited with %s; restarting it", w.index,
                              w.process.pid, w.process.exitcode)
                    w.close_handles()
                    time.sleep(RESTART_DELAY_S)
                    self._restart(w)

    def _restart(self, old: _Worker) -> None:
        """Replace a dead worker and give it the running rules with fresh sockets."""
        new = self._start(old.index)
        self._workers[self._workers.index(old)] = new
        keys = sorted({k for r in self._rules for k in socket_keys(r)})
        rule_of = {k: r for r in self._rules for k in socket_keys(r)}
        socks: list[socket.socket] = []
        try:
            for k in keys:
                socks.append(open_reuseport_socket(k, rule_of[k]))
            new.request(("apply", self._rules, self._owners, self._slots, keys), [s.fileno() for s in socks])
            new.keys = set(keys)
        except (OSError, TimeoutError) as e:
            log.error("worker %d: cannot restore its rules: %s", new.index, e)
        finally:
            for s in socks:
                s.close()


# ---------------------------------------------------------------- worker process


def _die_with_parent() -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def worker_main(index: int, conn: Any, shared: SharedLimits, disable_splice: bool,
                log_settings: tuple[str, str, str]) -> None:
    """A worker process: one Forwarder, driven by the supervisor's messages until "close"."""
    from portunus.dataplane import tune_process
    from portunus.runtime import setup_logging

    # The supervisor blocks these for sigwait and the mask survives exec: SIGTERM must end a
    # worker; SIGINT/SIGHUP (a terminal's Ctrl-C, a reload) are the supervisor's to act on.
    signal.pthread_sigmask(signal.SIG_SETMASK, {signal.SIGINT, signal.SIGHUP})
    _die_with_parent()
    level, fmt, label = log_settings
    setup_logging(level, fmt, f"{label}[w{index}]")
    tune_process()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, fileno=os.dup(conn.fileno()))
    fwd = Forwarder(disable_splice=disable_splice, shared=shared)
    try:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):  # the supervisor is gone
                fwd.close(0.0)
                return
            op = msg[0]
            try:
                if op == "apply":
                    _, rules, owners, slots, keys = msg
                    fds = recvfds(sock, len(keys)) if keys else []
                    given = {}
                    for key, fd in zip(keys, fds, strict=True):
                        kind = socket.SOCK_STREAM if key[0] == "tcp" else socket.SOCK_DGRAM
                        family = socket.AF_INET6 if ":" in key[1] else socket.AF_INET
                        s = socket.socket(family, kind, 0, fd)
                        s.setblocking(False)
                        given[key] = s
                    conn.send(fwd.apply(rules, owners, atomic=False, sockets=given, slots=slots))
                    for s in given.values():  # left over: not needed after all
                        s.close()
                elif op == "snapshot":
                    conn.send(fwd.snapshot())
                elif op == "active":
                    conn.send(fwd.active_connections())
                elif op == "close":
                    fwd.close(msg[1])
                    return
                else:
                    conn.send(ValueError(f"unknown worker message {op!r}"))
            except Exception as e:
                log.exception("worker %d: %s failed", index, op)
                conn.send(e)
    finally:
        sock.close()
