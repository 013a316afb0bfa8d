"""The forwarder: owns listeners, rule states and live connections of one worker.

One object serves both runtimes (`portunus-standalone` from a TOML file and
`portunus-client` from pushed rule sets). TCP runs on one event loop thread
(portunus.dataplane.loop): accept, non-blocking dial with failover, PROXY
header, relaying, half-close and teardown all happen there, with no thread
hand-off per connection. UDP runs on its own engine (portunus.dataplane.udp).

`apply` diffs a new rule set against the running one at the socket level,
so a listener whose (protocol, address, port) survives keeps its socket and
its connections; `apply_changes` does the same for the rules a delta names
only, so its cost does not grow with the rules left alone; `close` stops accepting, drains, then resets what is left.
`apply`, `snapshot`, `active_connections` and `close` may be called from
any thread.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import threading
import time
from collections import Counter as Tally
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from portunus.config import DEFAULT_TCP_KEEPALIVE_SECS, Owner, RateLimit, Rule
from portunus.dataplane import sni, tcp
from portunus.dataplane.health import HealthMonitor
from portunus.dataplane.loop import EPOLLIN, EventLoop
from portunus.dataplane.pipes import SPLICE_AVAILABLE, PipePool
from portunus.dataplane.shared import SharedLimits, slot_name
from portunus.dataplane.stats import RuleStats, describe_health
from portunus.dataplane.tcp import RawSocket, Target, TcpConnection, literal_family
from portunus.limits import (
    LIMIT_SET_CELLS,
    LimitSet,
    Quota,
    SharedLimitSet,
    ThrottleGroup,
    admit,
    release,
    use_admission_lock,
)

log = logging.getLogger("portunus.forwarder")

# Time to wait for a target's SYN-ACK before trying the next target.
CONNECT_TIMEOUT_S = 5.0
# Accept queue length; the kernel caps it at net.core.somaxconn (4096 on Debian 12).
LISTEN_BACKLOG = 4096
# Connections taken per readiness event, so one busy port cannot starve others.
ACCEPT_BATCH = 64
# Out of fds/memory at accept: stop accepting on that port this long instead of spinning.
ACCEPT_BACKOFF_S = 0.1
_ACCEPT_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
# Connect deadlines are checked this often (a connect timeout is accurate to this).
HOUSEKEEPING_S = 0.25
# How often per-rule byte totals are sampled for the rate metric, and idle connections swept.
RATE_SAMPLE_INTERVAL_S = 1.0
# Keepalive probes after the idle time: every 10 s (or every idle time, if shorter),
# 6 unanswered = dead, so a vanished peer is dropped within idle + 60 s.
KEEPALIVE_INTERVAL_S = 10
KEEPALIVE_PROBES = 6
# Upstream keepalive is armed for connections open at least this long (checked each second).
KEEPALIVE_ARM_AFTER_S = 1.0
# Copy buffers kept for reuse: a relay holds one only while its destination is full
# (bytes read but not yet sent), so idle connections hold none.
MAX_POOLED_BUFFERS = 64
# DNS lookups in flight at once (getaddrinfo blocks, so it runs off the loop).
RESOLVER_THREADS = 4


def splice_disabled_by_env() -> bool:
    return os.environ.get("PORTUNUS_DISABLE_SPLICE", "") not in ("", "0")


class BindError(Exception):
    """Rules whose listeners could not be opened: {rule name: reason}."""

    def __init__(self, failures: dict[str, str]):
        self.failures = failures
        super().__init__("; ".join(f'rule "{k}": {v}' for k, v in failures.items()))


class RuleState:
    """A running rule: its definition, live limits, counters and per-port dial lists."""

    def __init__(self, rule: Rule, limits: LimitSet, owner_limits: LimitSet | None,
                 stats: RuleStats) -> None:
        self.limits = limits
        self.stats = stats
        self.health: HealthMonitor | None = None  # set on the loop thread by the forwarder
        self.update(rule, owner_limits)

    def update(self, rule: Rule, owner_limits: LimitSet | None) -> None:
        self.rule = rule
        self.limits.update(rule.rate_limit)
        self.owner_limits = owner_limits
        self.sets: tuple[LimitSet, ...] = (self.limits,) if owner_limits is None else (self.limits, owner_limits)
        self.capped = any(ls.has_bandwidth_cap for ls in self.sets)
        quotas = tuple(ls.quota for ls in self.sets if ls.quota is not None)
        self.quotas: tuple[Quota, ...] | None = quotas or None
        self.idle_timeout_s = rule.idle_timeout_secs
        self.keepalive_s = rule.tcp_keepalive_secs
        self._targets: dict[int, list[Target]] = {}

    def limit_sets(self) -> tuple[LimitSet, ...]:
        return self.sets

    def has_bandwidth_cap(self) -> bool:
        return self.capped

    def targets_for(self, port: int) -> list[Target]:
        """Dial list for a connection on `port`, best first, without targets the health
        checks found down (computed once per port and health change)."""
        found = self._targets.get(port)
        if found is None:
            found = [Target(h, p, proxy, literal_family(h)) for h, p, proxy in self.rule.targets_for(port)]
            if self.health is not None:
                found = self.health.usable(found)
            self._targets[port] = found
        return found

    def targets_changed(self) -> None:
        """A target went up or down: dial lists are computed afresh."""
        self._targets = {}


Key = tuple[str, str, int]  # (protocol, address, port) of a listening socket


@dataclass
class _Listener:
    key: Key
    sock: socket.socket
    state: RuleState           # reassigned in place when a reload changes the rule
    routes: sni.RouteTable | None = None  # rules chosen by server name (SNI listeners only)
    family: int = 0            # sock.family as a plain int (the property builds an enum per call)

    def __post_init__(self) -> None:
        self.family = int(self.sock.family)


def socket_keys(rule: Rule) -> list[Key]:
    return [(rule.protocol, rule.listen_addr, p) for p in rule.listen_ports]


def _sni_label(key: Key) -> str:
    return f"{key[1]}:{key[2]}" if ":" not in key[1] else f"[{key[1]}]:{key[2]}"


def set_keepalive(sock: socket.socket | RawSocket, idle_s: float) -> None:
    """TCP keepalive: first probe after `idle_s` of silence, so a vanished peer is noticed."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(idle_s)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL,
                        max(1, min(KEEPALIVE_INTERVAL_S, int(idle_s))))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_PROBES)
    except (OSError, AttributeError):
        pass


def open_tcp_listener(addr: str, port: int, keepalive_s: float = DEFAULT_TCP_KEEPALIVE_SECS,
                      reuse_port: bool = False) -> socket.socket:
    """A non-blocking listener; accepted sockets inherit its TCP_NODELAY and keepalive
    settings (Linux copies them at accept), which saves syscalls per connection."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        set_keepalive(sock, keepalive_s)
        sock.bind((addr, port))
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


class Forwarder:
    """Runs a rule set on one event loop; thread-safe `apply`, `snapshot` and `close`."""

    def __init__(self, *, disable_splice: bool | None = None,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S, shared: SharedLimits | None = None) -> None:
        """`shared`: this forwarder is one of several worker processes; its limits live
        in the supervisor's shared memory (portunus.dataplane.shared)."""
        self._shared = shared
        self._slots: dict[str, int] = {}
        if shared is not None:
            use_admission_lock(shared.admit_lock)
        if disable_splice is None:
            disable_splice = splice_disabled_by_env()
        self.splice_enabled = SPLICE_AVAILABLE and not disable_splice
        self.connect_timeout_s = connect_timeout_s
        self._lock = threading.RLock()  # guards rule/listener tables (not the hot path)
        self._states: dict[str, RuleState] = {}
        self._stats: dict[str, RuleStats] = {}
        self._owners: dict[str, LimitSet] = {}
        self._listeners: dict[Key, _Listener] = {}
        self._holders: dict[Key, dict[str, None]] = {}  # names of the rules on each listening key
        self._lingering: set[str] = set()  # dropped rules whose counters wait for their last connection
        self._closing = False
        self._udp: Any = None  # UDP engine, created on the first UDP rule
        # Loop-thread state (touched only on the loop thread).
        self.loop = EventLoop("dataplane")
        self.register = self.loop.register
        self.modify = self.loop.modify
        self.pipes = PipePool()
        self._buffer_bytes = tcp.COPY_BUFFER_BYTES  # read at start: a benchmark may patch it
        self._buffers: list[memoryview] = []
        self.buffer = self.take_buffer()  # the copy path's shared read buffer
        self.buffer_bytes = self._buffer_bytes
        self.connecting: set[TcpConnection] = set()
        self.connections: set[TcpConnection] = set()
        self.peeking: set[sni.Peek] = set()  # SNI listeners' connections still reading a ClientHello
        self._sni_closed: dict[str, Tally[str]] = {}  # per SNI listener: connections no rule took
        self._resolver: ThreadPoolExecutor | None = None
        self._idle = threading.Event()  # set by the loop when draining has nothing left
        self._next_sample = 0.0
        self.loop.call_later(0.0, self._housekeeping)
        self.loop.start()

    # ------------------------------------------------------------ rules

    def rules(self) -> list[Rule]:
        with self._lock:
            return [s.rule for s in self._states.values()]

    def apply(self, rules: Sequence[Rule], owners: Sequence[Owner] = (), *,
              atomic: bool = True, sockets: dict[Key, socket.socket] | None = None,
              slots: dict[str, int] | None = None) -> dict[str, str | None]:
        """Make `rules` the running set; return {rule name: None or failure reason}.

        atomic=True (standalone reload): if any listener cannot be opened,
        nothing changes and BindError is raised. atomic=False (control plane):
        rules that cannot be opened are left out and reported, the rest apply.
        In a worker process the supervisor passes the listening `sockets` it
        opened for new keys and the shared-limit `slots` of every name.
        """
        with self._lock:
            if self._closing:
                raise RuntimeError("forwarder is closing")
            if slots is not None:
                self._slots = slots
            known_owners = self._apply_owners(owners)
            new_socks, failures = self._open_keys(rules, sockets)
            if failures and atomic:
                for s in new_socks.values():
                    s.close()
                raise BindError(failures)
            active = [r for r in rules if r.name not in failures]
            holders: dict[Key, dict[str, None]] = {}
            for r in active:
                for key in socket_keys(r):
                    holders.setdefault(key, {})[r.name] = None
            self._drop_unneeded(new_socks, holders)
            states = {rule.name: self._state_for(rule, known_owners) for rule in active}
            by_key = {key: [states[n] for n in names] for key, names in holders.items()}
            by_key.update({key: [] for key in self._listeners if key not in holders})
            retired = [old for old in self._states.values() if states.get(old.rule.name) is not old]
            # Point sockets at their (new) rule, register new ones, close dropped ones
            # (on the loop thread: no event can then see a half-changed table).
            self.loop.call_and_wait(self._install, by_key, new_socks, retired, list(states.values()))
            self._states, self._holders = states, holders
            self._prune_stats(list(self._stats))
            result: dict[str, str | None] = {r.name: None for r in active}
            result.update(failures)
            return result

    def apply_changes(self, upsert: Sequence[Rule], remove: Sequence[str],
                      owners: Sequence[Owner] = ()) -> dict[str, str | None]:
        """Change only the rules named; return {name: None or failure reason} for `upsert`.

        The same outcome as apply(running rules less `remove` and `upsert`'s names, plus
        `upsert`, owners, atomic=False), at the cost of the rules named, not of every
        rule running (a control-plane delta): other rules' states and listeners are
        not looked at. Single-process forwarders only (workers take whole sets).
        """
        if self._shared is not None:
            raise RuntimeError("apply_changes needs a single-process forwarder")
        with self._lock:
            if self._closing:
                raise RuntimeError("forwarder is closing")
            known_owners = self._apply_owners(owners)
            gone = [*remove, *(r.name for r in upsert)]
            new_socks, failures = self._open_keys(upsert, None)
            active = [r for r in upsert if r.name not in failures]
            holders = self._holders
            touched: set[Key] = set()
            for name in gone:
                old = self._states.get(name)
                if old is not None:
                    for key in socket_keys(old.rule):
                        touched.add(key)
                        holders.get(key, {}).pop(name, None)
            for r in active:
                for key in socket_keys(r):
                    touched.add(key)
                    holders.setdefault(key, {})[r.name] = None
            self._drop_unneeded(new_socks, holders)
            states = dict(self._states)  # a copy of references: snapshot() may be reading the old one
            changed = [self._state_for(rule, known_owners) for rule in active]
            for name in gone:
                states.pop(name, None)
            states.update((st.rule.name, st) for st in changed)
            by_key = {key: [states[n] for n in holders.get(key, ())] for key in touched}
            for key in touched:
                if not holders.get(key):
                    holders.pop(key, None)
            retired = [old for name in gone if (old := self._states.get(name)) is not None
                       and states.get(name) is not old]
            self.loop.call_and_wait(self._install, by_key, new_socks, retired, changed)
            self._states = states
            self._prune_stats([*gone, *self._lingering])
            result: dict[str, str | None] = {r.name: None for r in active}
            result.update(failures)
            return result

    def _apply_owners(self, owners: Sequence[Owner]) -> set[str]:
        """Update or create the owners' limit sets and quota budgets; return their names.

        `owners` is every owner (a delta's too): one left out has its quota lifted."""
        for o in owners:
            ls = self._owners.get(o.name)
            if ls is not None and self._same_slot(ls, "owner", o.name):
                ls.update(o.rate_limit)
            else:
                ls = self._owners[o.name] = self._limit_set("owner", o.name, o.rate_limit)
            ls.set_quota(o.quota.bytes if o.quota is not None else None)
        known = {o.name for o in owners}
        for name, ls in self._owners.items():
            if name not in known:
                ls.set_quota(None)
        return known

    def _open_keys(self, rules: Sequence[Rule], sockets: dict[Key, socket.socket] | None
                   ) -> tuple[dict[Key, socket.socket], dict[str, str]]:
        """Open every socket `rules` need that is not open yet: (sockets by key, {rule: failure})."""
        new_socks: dict[Key, socket.socket] = {}
        failures: dict[str, str] = {}
        for rule in rules:
            for key in socket_keys(rule):
                if key in self._listeners or key in new_socks:
                    continue
                try:
                    new_socks[key] = sockets.pop(key) if sockets and key in sockets else self._open(key, rule)
                except OSError as e:
                    failures[rule.name] = f"cannot listen on {key[0]} {key[1]}:{key[2]}: {e.strerror or e}"
                    break
        return new_socks, failures

    @staticmethod
    def _drop_unneeded(new_socks: dict[Key, socket.socket], holders: dict[Key, dict[str, None]]) -> None:
        """Close sockets opened for a rule that failed elsewhere."""
        for key in list(new_socks):
            if not holders.get(key):
                new_socks.pop(key).close()

    def _state_for(self, rule: Rule, known_owners: set[str]) -> RuleState:
        """The rule's state, updated in place or new (counters survive by name)."""
        owner_ls = self._owners.get(rule.owner) if rule.owner else None
        if rule.owner and rule.owner not in known_owners and owner_ls is None:
            owner_ls = self._owners[rule.owner] = self._limit_set("owner", rule.owner, None)
        st = self._states.get(rule.name)
        if st is not None and not self._same_slot(st.limits, "rule", rule.name):
            st = None
        if st is None:
            stats = self._stats.setdefault(rule.name, RuleStats())
            return RuleState(rule, self._limit_set("rule", rule.name, rule.rate_limit), owner_ls, stats)
        st.update(rule, owner_ls)
        return st

    def _prune_stats(self, names: Sequence[str]) -> None:
        """Forget the counters of dropped rules once their last connection is gone."""
        for name in names:
            stats = self._stats.get(name)
            if stats is None or name in self._states:
                self._lingering.discard(name)
            elif stats.live:
                self._lingering.add(name)
            else:
                del self._stats[name]
                self._lingering.discard(name)

    def _limit_set(self, kind: str, name: str, limits: RateLimit | None) -> LimitSet:
        """A rule's or owner's LimitSet: private, or in its shared slot in a worker process."""
        if self._shared is None:
            return LimitSet(limits)
        base = self._slots[slot_name(kind, name)] * LIMIT_SET_CELLS
        return SharedLimitSet(limits, cells=self._shared.cells, base=base, lock=self._shared.bucket_lock)

    def _same_slot(self, ls: LimitSet, kind: str, name: str) -> bool:
        """False if the supervisor moved this name to another slot (it was gone, then came back)."""
        return self._shared is None or ls.base == self._slots[slot_name(kind, name)] * LIMIT_SET_CELLS

    def _install(self, by_key: dict[Key, list[RuleState]], new_socks: dict[Key, socket.socket],
                 retired: list[RuleState], synced: list[RuleState]) -> None:
        """Listeners of the keys in `by_key` serve those states (none: closed); health checks follow."""
        for key, sts in by_key.items():
            if not sts:
                gone = self._listeners.pop(key, None)
                if gone is not None:
                    self._close_listener(gone)
                self._forget_sni_label(key)
                continue
            # One rule per key, or (TCP) several told apart by sni_pattern plus a fallback.
            routes = None
            if any(st.rule.sni_pattern is not None for st in sts):
                fallback = [st for st in sts if st.rule.sni_pattern is None]
                st = fallback[0] if fallback else sts[0]
                label = _sni_label(key)
                tally = self._sni_closed.setdefault(label, sni.new_listener_tally())
                routes = sni.RouteTable(label, sts, st.keepalive_s, tally)
            else:
                st = sts[0]
                self._forget_sni_label(key)
            lst = self._listeners.get(key)
            if lst is not None:
                if key[0] == "tcp" and lst.state.keepalive_s != st.keepalive_s:
                    set_keepalive(lst.sock, st.keepalive_s)
                switch = (lst.routes is None) != (routes is None)
                lst.state, lst.routes = st, routes
                if switch:  # plain <-> SNI: the same socket, the other accept loop
                    self.loop.set_handler(lst.sock.fileno(), self._accept_handler(lst))
                continue
            lst = _Listener(key, new_socks[key], st, routes)
            self._listeners[key] = lst
            if key[0] == "tcp":
                self._watch_listener(lst)
            else:
                self._udp_engine().add(lst)
        for old in retired:
            if old.health is not None:
                old.health.stop()
                old.health = None
        for st in synced:
            self._sync_health(st)
        # A quota set (or lifted) on an owner applies to its live connections too, from their next chunk:
        # a connection opened before the quota is no way around it.
        for conn in self.connections:
            quotas = conn.rule_state.quotas
            if conn.relay_in.quotas is not quotas:
                conn.relay_in.quotas = conn.relay_out.quotas = quotas

    def _forget_sni_label(self, key: Key) -> None:
        """The key no longer routes by SNI: drop its counters of connections no rule took."""
        if key[0] == "tcp":
            self._sni_closed.pop(_sni_label(key), None)

    def _sync_health(self, st: RuleState) -> None:
        """Start, keep, restart or stop the rule's health checks (loop thread)."""
        rule = st.rule
        interval = rule.health_check_interval_secs if rule.protocol == "tcp" else None
        keys = [(t.host, t.port) for t in rule.targets]
        mon = st.health
        if interval is None:
            if mon is not None:
                mon.stop()
                st.health = None
                st.targets_changed()
            return
        if mon is not None and mon.same(keys, interval):
            mon.rule_name = rule.name
            return
        new = HealthMonitor(self.loop, self.resolve, rule.name, keys, interval, st.targets_changed, previous=mon)
        if mon is not None:
            mon.stop()
        st.health = new
        new.start()
        st.targets_changed()

    def _open(self, key: Key, rule: Rule) -> socket.socket:
        proto, addr, port = key
        if proto == "tcp":
            return open_tcp_listener(addr, port, rule.tcp_keepalive_secs)
        from portunus.dataplane.udp import open_udp_listener
        return open_udp_listener(addr, port)

    def _udp_engine(self) -> Any:
        if self._udp is None:
            from portunus.dataplane.udp import UdpEngine
            self._udp = UdpEngine(self)
        return self._udp

    def _watch_listener(self, lst: _Listener) -> None:
        self.loop.add(lst.sock.fileno(), self._accept_handler(lst), EPOLLIN)  # level-triggered

    def _accept_handler(self, lst: _Listener) -> Any:
        if lst.routes is not None:
            return lambda _mask: sni.accept_batch(self, lst, ACCEPT_BATCH)
        return lambda _mask: self._accept_batch(lst)

    def _close_listener(self, lst: _Listener) -> None:
        if lst.key[0] == "tcp":
            try:
                self.loop.remove(lst.sock.fileno())
            except OSError:
                pass
            lst.sock.close()
        else:
            self._udp_engine().remove(lst)

    # ------------------------------------------------------------ accepting (loop thread)

    def _accept_batch(self, lst: _Listener) -> None:
        accept = lst.sock._accept  # type: ignore[attr-defined]  # (fd, address): no socket object until admitted
        family = lst.family
        port = lst.key[2]
        for _ in range(ACCEPT_BATCH):
            try:
                fd, peer = accept()
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in _ACCEPT_RESOURCE_ERRNOS:
                    log.warning("accept on port %d: %s; backing off", lst.key[2], e.strerror)
                    self._pause_listener(lst)
                return  # EBADF etc.: the listener was closed by a reload
            state = lst.state
            verdict = admit(state.sets)
            if verdict.reason is not None:
                state.stats.reject(verdict.reason)
                refused = socket.socket(family, socket.SOCK_STREAM, 0, fd)
                try:
                    refused.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, tcp.LINGER_RESET)
                except OSError:
                    pass
                refused.close()
                continue
            client = RawSocket(family, socket.SOCK_STREAM, 0, fd)
            if state.capped:
                # One group per direction: the chunk waits for the slowest of
                # rule and owner bucket, not for their sum.
                t_in: Any = ThrottleGroup(ls.bandwidth_in for ls in state.sets)
                t_out: Any = ThrottleGroup(ls.bandwidth_out for ls in state.sets)
                splice_ok = False
            else:
                t_in = t_out = None
                splice_ok = self.splice_enabled
            conn = TcpConnection(self, client, fd, peer, state, state.targets_for(port),
                                 splice_ok, t_in, t_out, state.quotas)
            self.connections.add(conn)
            conn.start()

    def accept_failed(self, lst: _Listener, e: OSError) -> None:
        """accept() failed with something other than EAGAIN (SNI listeners' accept loop)."""
        if e.errno in _ACCEPT_RESOURCE_ERRNOS:
            log.warning("accept on port %d: %s; backing off", lst.key[2], e.strerror)
            self._pause_listener(lst)

    def start_routed(self, state: RuleState, client: RawSocket, fd: int, peer: Any, port: int,
                     early: bytes, keepalive_s: float) -> None:
        """Admit a connection an SNI listener routed to `state` and forward it, `early` first.

        The same admission as `_accept_batch` (kept inline there: it is the hot path
        of every other listener)."""
        verdict = admit(state.sets)
        if verdict.reason is not None:
            state.stats.reject(verdict.reason)
            try:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, tcp.LINGER_RESET)
            except OSError:
                pass
            client.close()
            return
        if state.keepalive_s != keepalive_s:  # the listener's setting came from another rule
            set_keepalive(client, state.keepalive_s)
        if state.capped:
            t_in: Any = ThrottleGroup(ls.bandwidth_in for ls in state.sets)
            t_out: Any = ThrottleGroup(ls.bandwidth_out for ls in state.sets)
            t_in.reserve(len(early))  # the peeked bytes leave at once; later chunks repay them
            splice_ok = False
        else:
            t_in = t_out = None
            splice_ok = self.splice_enabled
        conn = sni.PeekedConnection(self, client, fd, peer, state, state.targets_for(port),
                                    splice_ok, t_in, t_out, state.quotas, early=early)
        self.connections.add(conn)
        conn.start()

    def _pause_listener(self, lst: _Listener) -> None:
        fd = lst.sock.fileno()
        self.loop.remove(fd)

        def resume() -> None:
            if self._listeners.get(lst.key) is lst and lst.sock.fileno() == fd:
                self._watch_listener(lst)

        self.loop.call_later(ACCEPT_BACKOFF_S, resume)

    # ------------------------------------------------------------ connection hooks (loop thread)

    def closed(self, conn: TcpConnection, opened: bool) -> None:
        if opened:
            conn.rule_state.stats.closed_tcp(conn, conn.relay_in.bytes, conn.relay_out.bytes)
        release(conn.sets)
        self.connections.discard(conn)
        if self._closing and not self.connections:
            self._idle.set()

    def take_buffer(self) -> memoryview:
        """A copy buffer from the pool (or a new one)."""
        try:
            return self._buffers.pop()
        except IndexError:
            return memoryview(bytearray(self._buffer_bytes))

    def give_buffer(self, buf: memoryview) -> None:
        if len(self._buffers) < MAX_POOLED_BUFFERS:
            self._buffers.append(buf)

    def resolve(self, conn: Any, target: Target) -> None:
        """Resolve a DNS target off the loop; `conn.resolved(...)` gets the answer on the loop thread
        (a TcpConnection, or a health probe)."""
        if self._resolver is None:
            self._resolver = ThreadPoolExecutor(RESOLVER_THREADS, thread_name_prefix="tcp-dns")
        loop = self.loop

        def lookup() -> None:
            try:
                infos = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
                addrs = [(fam, sa[0], sa[1]) for fam, _t, _p, _c, sa in infos
                         if fam in (socket.AF_INET, socket.AF_INET6)]
                loop.call_soon_threadsafe(conn.resolved, target, addrs, None if addrs else "no address")
            except OSError as e:
                loop.call_soon_threadsafe(conn.resolved, target, [], e.strerror or str(e))

        self._resolver.submit(lookup)

    def _housekeeping(self) -> None:
        now = self.loop.now
        if self.connecting:
            for conn in [c for c in self.connecting if c.deadline <= now]:
                conn.connect_timed_out()
        if now >= self._next_sample:
            self._next_sample = now + RATE_SAMPLE_INTERVAL_S
            # No self._lock here: apply() holds it while it waits for this thread.
            # list() of a dict view runs without releasing the GIL: a consistent copy.
            for st in list(self._stats.values()):
                st.sample(now)
            arm_before = now - KEEPALIVE_ARM_AFTER_S
            for conn in list(self.connections):
                # Activity = bytes moved since the last sweep: no clock read per event.
                moved = conn.relay_in.bytes + conn.relay_out.bytes
                if moved != conn.seen_bytes:
                    conn.seen_bytes = moved
                    conn.last_active = now
                elif now - conn.last_active > conn.rule_state.idle_timeout_s:
                    conn.expire()
                    continue
                elif not conn.keepalive_armed and conn.upstream is not None and 0 < conn.opened_at <= arm_before:
                    # The client side inherited keepalive from the listener; the upstream
                    # side gets it once the connection has lasted a while, so the many
                    # short connections never pay the four setsockopt calls.
                    conn.keepalive_armed = True
                    set_keepalive(conn.upstream, conn.rule_state.keepalive_s)
        self.loop.call_later(HOUSEKEEPING_S, self._housekeeping)

    # ------------------------------------------------------------ state

    def snapshot(self) -> dict[str, Any]:
        """Per-rule counters, JSON-ready."""
        with self._lock:
            states = dict(self._states)
            stats = dict(self._stats)
        rules: dict[str, Any] = {}
        for name, st in stats.items():
            entry = st.snapshot()
            if name in states:
                r = states[name].rule
                entry["protocol"] = r.protocol
                entry["listen"] = f"{r.listen_addr}:{r.listen_port}" + (
                    f"-{r.listen_port_end}" if r.listen_port_end != r.listen_port else "")
                entry["targets"] = [t.display() for t in r.targets]
                entry["current_limits"] = {k: v for k, v in r.rate_limit.to_dict().items() if v is not None}
                if r.sni_pattern is not None:
                    entry["sni_pattern"] = r.sni_pattern
                health = states[name].health
                if health is not None:
                    entry.update(health.snapshot())
                    describe_health(entry)
            rules[name] = entry
        sni_listeners = {label: dict(tally) for label, tally in list(self._sni_closed.items())}
        return {"rules": rules, "sni_listeners": sni_listeners, "splice_enabled": self.splice_enabled}

    def quota_used(self) -> dict[str, int]:
        """{owner: bytes charged to its quota} for every owner that has a quota."""
        with self._lock:
            return {name: ls.quota_used for name, ls in self._owners.items() if ls.quota is not None}

    def set_quota_used(self, owner: str, used: int, *, reset: bool = False) -> None:
        """Raise an owner's quota counter to `used` (a count saved elsewhere), or with
        `reset` set it to exactly `used` (a new period)."""
        with self._lock:
            ls = self._owners.get(owner)
            quota = ls.quota if ls is not None else None
        if quota is None:
            return
        if reset:
            quota.reset(used)
        else:
            quota.raise_to(used)

    def active_connections(self) -> int:
        n = len(self.connections)
        if self._udp is not None:
            n += self._udp.active_flows()
        return n

    def close(self, drain_s: float = 0.0) -> None:
        """Stop accepting, wait up to `drain_s` for connections to finish, reset the rest."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self.loop.call_and_wait(self._close_listeners)
            if not self.connections:
                self._idle.set()
        if self._udp is not None:
            self._udp.close()
        deadline = time.monotonic() + drain_s
        while not self._idle.wait(timeout=min(0.2, max(0.0, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                break
        self.loop.call_and_wait(self._abort_all)
        self.loop.stop()
        self.pipes.close()
        self.loop.close()
        if self._resolver is not None:
            self._resolver.shutdown(wait=False, cancel_futures=True)

    def _close_listeners(self) -> None:
        for lst in list(self._listeners.values()):
            self._close_listener(lst)
        self._listeners.clear()
        for peek in list(self.peeking):  # never routed: nothing to drain
            peek.abort()
        for st in self._states.values():
            if st.health is not None:
                st.health.stop()

    def _abort_all(self) -> None:
        leftovers = list(self.connections)
        if leftovers:
            log.info("drain deadline reached: resetting %d connection(s)", len(leftovers))
        for conn in leftovers:
            conn.abort()
