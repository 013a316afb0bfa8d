"""The forwarder: owns listeners, rule states and live connections.

One object serves both runtimes (`portunus-standalone` from a TOML file and
`portunus-client` from pushed rule sets): `apply` diffs a new rule set against
the running one at the socket level, so a listener whose (protocol, address,
port) survives keeps its socket and its connections; `close` stops accepting,
drains, then resets what is left.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from portunus.config import Owner, Rule
from portunus.dataplane.pumps import SPLICE_AVAILABLE
from portunus.dataplane.stats import RuleStats
from portunus.dataplane.tcp import DialError, TcpConnection, dial, send_proxy_header, tune_socket
from portunus.dataplane.workers import PipePool, WorkerPool
from portunus.limits import LimitSet, ThrottleGroup, admit, release

log = logging.getLogger("portunus.forwarder")

# Time to wait for a target's SYN-ACK before trying the next target.
CONNECT_TIMEOUT_S = 5.0
# Accept queue length; the kernel caps it at net.core.somaxconn (4096 on Debian 12).
LISTEN_BACKLOG = 4096
# Connections taken per readiness event, so one busy port cannot starve others.
ACCEPT_BATCH = 64
# Out of fds/memory at accept: back off this long instead of spinning (trio does the same).
ACCEPT_BACKOFF_S = 0.1
_ACCEPT_RESOURCE_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
# How often the acceptor samples per-rule byte totals for the current-rate metric.
RATE_SAMPLE_INTERVAL_S = 1.0


def splice_disabled_by_env() -> bool:
    return os.environ.get("PORTUNUS_DISABLE_SPLICE", "") not in ("", "0")


class BindError(Exception):
    """Rules whose listeners could not be opened: {rule name: reason}."""

    def __init__(self, failures: dict[str, str]):
        self.failures = failures
        super().__init__("; ".join(f'rule "{k}": {v}' for k, v in failures.items()))


class RuleState:
    """A running rule: its definition, live limits and counters."""

    def __init__(self, rule: Rule, owner_limits: LimitSet | None, stats: RuleStats) -> None:
        self.rule = rule
        self.limits = LimitSet(rule.rate_limit)
        self.owner_limits = owner_limits
        self.stats = stats

    def update(self, rule: Rule, owner_limits: LimitSet | None) -> None:
        self.rule = rule
        self.limits.update(rule.rate_limit)
        self.owner_limits = owner_limits

    def limit_sets(self) -> tuple[LimitSet, ...]:
        if self.owner_limits is None:
            return (self.limits,)
        return (self.limits, self.owner_limits)

    def has_bandwidth_cap(self) -> bool:
        return any(ls.has_bandwidth_cap for ls in self.limit_sets())


@dataclass
class _Listener:
    key: tuple[str, str, int]  # (protocol, address, port)
    sock: socket.socket
    state: RuleState           # reassigned in place when a reload changes the rule


def _socket_key(rule: Rule) -> list[tuple[str, str, int]]:
    return [(rule.protocol, rule.listen_addr, p) for p in rule.listen_ports]


def open_tcp_listener(addr: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((addr, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


class Forwarder:
    """Runs a rule set; thread-safe `apply`, `snapshot` and `close`."""

    def __init__(self, *, disable_splice: bool | None = None,
                 connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        if disable_splice is None:
            disable_splice = splice_disabled_by_env()
        self.splice_enabled = SPLICE_AVAILABLE and not disable_splice
        self.connect_timeout_s = connect_timeout_s
        self._lock = threading.RLock()  # guards rule/listener tables (not the hot path)
        self._states: dict[str, RuleState] = {}
        self._stats: dict[str, RuleStats] = {}
        self._owners: dict[str, LimitSet] = {}
        self._listeners: dict[tuple[str, str, int], _Listener] = {}
        self._connections: set[TcpConnection] = set()
        self._conn_lock = threading.Lock()
        self._workers = WorkerPool("conn")
        self._pipes = PipePool()
        self._idle = threading.Condition(self._conn_lock)
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._closing = False
        self._acceptor = threading.Thread(target=self._accept_loop, name="acceptor", daemon=True)
        self._acceptor.start()
        self._udp: Any = None  # UDP engine, created on the first UDP rule

    # ------------------------------------------------------------ rules

    def rules(self) -> list[Rule]:
        with self._lock:
            return [s.rule for s in self._states.values()]

    def apply(self, rules: Sequence[Rule], owners: Sequence[Owner] = (), *,
              atomic: bool = True) -> dict[str, str | None]:
        """Make `rules` the running set; return {rule name: None or failure reason}.

        atomic=True (standalone reload): if any listener cannot be opened,
        nothing changes and BindError is raised. atomic=False (control plane):
        rules that cannot be opened are left out and reported, the rest apply.
        """
        with self._lock:
            if self._closing:
                raise RuntimeError("forwarder is closing")
            for o in owners:
                if o.name in self._owners:
                    self._owners[o.name].update(o.rate_limit)
                else:
                    self._owners[o.name] = LimitSet(o.rate_limit)
            known_owners = {o.name for o in owners}

            # 1. Open every socket the new set needs that is not open yet.
            new_socks: dict[tuple[str, str, int], socket.socket] = {}
            failures: dict[str, str] = {}
            for rule in rules:
                for key in _socket_key(rule):
                    if key in self._listeners or key in new_socks:
                        continue
                    try:
                        new_socks[key] = self._open(key)
                    except OSError as e:
                        failures[rule.name] = f"cannot listen on {key[0]} {key[1]}:{key[2]}: {e.strerror or e}"
                        break
            if failures and atomic:
                for s in new_socks.values():
                    s.close()
                raise BindError(failures)
            active = [r for r in rules if r.name not in failures]
            # Sockets opened for a rule that failed elsewhere are not needed.
            needed = {k for r in active for k in _socket_key(r)}
            for key in list(new_socks):
                if key not in needed:
                    new_socks.pop(key).close()

            # 2. Update or create rule states (counters survive by name).
            states: dict[str, RuleState] = {}
            for rule in active:
                owner_ls = self._owners.get(rule.owner) if rule.owner else None
                if rule.owner and rule.owner not in known_owners and owner_ls is None:
                    owner_ls = self._owners.setdefault(rule.owner, LimitSet())
                st = self._states.get(rule.name)
                if st is None:
                    stats = self._stats.setdefault(rule.name, RuleStats())
                    st = RuleState(rule, owner_ls, stats)
                else:
                    st.update(rule, owner_ls)
                states[rule.name] = st

            # 3. Point sockets at their (new) rule, register new ones, close dropped ones.
            for rule in active:
                for key in _socket_key(rule):
                    if key in self._listeners:
                        self._listeners[key].state = states[rule.name]
                    else:
                        lst = _Listener(key, new_socks[key], states[rule.name])
                        self._listeners[key] = lst
                        if key[0] == "tcp":
                            self._selector.register(lst.sock, selectors.EVENT_READ, lst)
                        else:
                            self._udp_engine().add(lst)
            for key in list(self._listeners):
                if key not in needed:
                    self._close_listener(self._listeners.pop(key))
            self._states = states
            for name in list(self._stats):
                if name not in states and not self._stats[name].live:
                    del self._stats[name]
            self._wake()
            result: dict[str, str | None] = {r.name: None for r in active}
            result.update(failures)
            return result

    def _open(self, key: tuple[str, str, int]) -> socket.socket:
        proto, addr, port = key
        if proto == "tcp":
            return open_tcp_listener(addr, port)
        from portunus.dataplane.udp import open_udp_listener
        return open_udp_listener(addr, port)

    def _udp_engine(self) -> Any:
        if self._udp is None:
            from portunus.dataplane.udp import UdpEngine
            self._udp = UdpEngine(self)
        return self._udp

    def _close_listener(self, lst: _Listener) -> None:
        if lst.key[0] == "tcp":
            try:
                self._selector.unregister(lst.sock)
            except (KeyError, ValueError):
                pass
            lst.sock.close()
        else:
            self._udp_engine().remove(lst)

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    # ------------------------------------------------------------ accepting

    def _accept_loop(self) -> None:
        next_sample = time.monotonic()
        while not self._closing:
            now = time.monotonic()
            if now >= next_sample:  # per-rule byte totals for the "current rate" metric
                self._sample_rates(now)
                next_sample = now + RATE_SAMPLE_INTERVAL_S
            try:
                events = self._selector.select(timeout=max(0.0, next_sample - now))
            except OSError:
                if self._closing:
                    return
                raise
            for key, _ in events:
                if key.data is None:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except OSError:
                        pass
                    continue
                self._accept_batch(key.data)

    def _sample_rates(self, now: float) -> None:
        with self._lock:
            stats = list(self._stats.values())
        for st in stats:
            st.sample(now)

    def _accept_batch(self, lst: _Listener) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                client, _addr = lst.sock.accept()
            except BlockingIOError:
                return
            except OSError as e:
                if e.errno in _ACCEPT_RESOURCE_ERRNOS:
                    log.warning("accept on port %d: %s; backing off", lst.key[2], e.strerror)
                    time.sleep(ACCEPT_BACKOFF_S)
                return  # EBADF etc.: the listener was closed by a reload
            state = lst.state
            sets = state.limit_sets()
            verdict = admit(sets)
            if verdict.reason is not None:
                state.stats.reject(verdict.reason)
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                client.close()
                continue
            try:
                self._workers.submit(self._serve, client, lst.key[2], state, sets)
            except RuntimeError:  # cannot start a new thread: shed this connection
                release(sets)
                state.stats.reject("resources")
                client.close()

    # ------------------------------------------------------------ serving

    def _serve(self, client: socket.socket, port: int, state: RuleState,
               sets: tuple[LimitSet, ...]) -> None:
        stats = state.stats
        rule = state.rule
        try:
            tune_socket(client)
            try:
                upstream, proxy, failovers = dial(rule.targets_for(port), self.connect_timeout_s)
            except DialError as e:
                stats.count("connect_failures")
                if len(e.attempts) > 1:
                    stats.count("failovers", len(e.attempts) - 1)
                log.info('rule "%s": no target reachable: %s', rule.name, e)
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                return
            if failovers:
                stats.count("failovers", failovers)
            conn = TcpConnection(client, upstream)
            if proxy:
                try:
                    send_proxy_header(upstream, proxy, client)
                except OSError as e:
                    log.info('rule "%s": PROXY header not sent: %s', rule.name, e)
                    upstream.close()
                    return
            capped = state.has_bandwidth_cap()
            use_splice = self.splice_enabled and not capped
            if capped:
                # One group per direction: the chunk waits for the slowest of
                # rule and owner bucket, not for their sum.
                t_in = [ThrottleGroup(ls.bandwidth_in for ls in sets)]
                t_out = [ThrottleGroup(ls.bandwidth_out for ls in sets)]
            else:
                t_in = t_out = []
            with self._conn_lock:
                self._connections.add(conn)
            stats.opened(conn, use_splice)
            try:
                conn.run(self._workers, self._pipes if use_splice else None, t_in, t_out)
            finally:
                stats.closed(conn)
                conn.close()
                with self._conn_lock:
                    self._connections.discard(conn)
                    if not self._connections:
                        self._idle.notify_all()
        except Exception:  # never let one connection take the process down
            log.exception('rule "%s": connection handler failed', rule.name)
        finally:
            release(sets)
            try:
                client.close()
            except OSError:
                pass

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
            rules[name] = entry
        return {"rules": rules, "splice_enabled": self.splice_enabled}

    def active_connections(self) -> int:
        with self._conn_lock:
            n = len(self._connections)
        if self._udp is not None:
            n += self._udp.active_flows()
        return n

    def close(self, drain_s: float = 0.0) -> None:
        """Stop accepting, wait up to `drain_s` for connections to finish, reset the rest."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            for lst in list(self._listeners.values()):
                self._close_listener(lst)
            self._listeners.clear()
            self._wake()
        self._acceptor.join(timeout=5)
        if self._udp is not None:
            self._udp.close()
        deadline = time.monotonic() + drain_s
        with self._conn_lock:
            while self._connections and time.monotonic() < deadline:
                self._idle.wait(timeout=min(0.2, max(0.0, deadline - time.monotonic())))
            leftovers = list(self._connections)
        if leftovers:
            log.info("drain deadline reached: resetting %d connection(s)", len(leftovers))
        for conn in leftovers:
            conn.abort()
        with self._conn_lock:
            end = time.monotonic() + 2.0
            while self._connections and time.monotonic() < end:
                self._idle.wait(timeout=0.1)
        self._selector.close()
        self._pipes.close()
        self._wake_r.close()
        self._wake_w.close()
