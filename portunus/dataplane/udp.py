"""UDP data plane: listeners, a flow table per listener, and one engine thread.

A flow is one client address on one listening port. Its first datagram
creates it: the rule's (and owner's) admission limits are checked then
(udp_max_flows, concurrent_connections = live flows, new_connections_per_sec =
new flows per second), and a connected upstream socket is opened to the
target, resolved at that moment (DNS names in a small resolver pool, so a
slow lookup never stalls other flows). Datagrams then go client -> listening
socket -> flow's upstream socket -> target, and replies come back on the
upstream socket and leave from the listening socket, so the client sees the
address it sent to. Bandwidth caps police each datagram (over the cap:
dropped and counted, never queued). A flow ends when idle for
udp_flow_idle_secs, when the target answers with ICMP port unreachable
(ECONNREFUSED on the connected upstream socket), or when its listener goes.

Counting (RuleStats): a flow is a "connection" (connections_total/active,
bytes in/out). rejected{max_flows|concurrency|connection_rate} counts refused
new-flow datagrams (each datagram from an unknown client is a new-flow
attempt); udp_max_flows is per rule, over all of its ports (and all worker processes:
the count lives in the rule's LimitSet, checked by admit()). connect_failures
counts flows ended by an ICMP error or by no usable target. dropped{reason}
counts datagrams: bandwidth_in / bandwidth_out (over the cap), resolving
(queue full while DNS resolves), no_target, upstream_buffer_full /
client_buffer_full (EAGAIN on send), send_error, upstream_error, quota.

Traffic quotas (the owner's limits.Quota): every datagram forwarded either
way is charged. A run of datagrams is cut at the one that spends the budget
(that one still goes, so at most one datagram past it), the rest of the run is
dropped (quota), the flow is evicted (quota_cuts), and admit() refuses new
flows (rejected{quota}) until the period ends.

Concurrency model: ONE engine thread multiplexes every UDP listener and
upstream socket with a selector (epoll). UDP needs no per-flow blocking
pumps (unlike TCP there is no stream to splice), so one thread avoids a
thread per flow and all locking on the flow table.

Batches: a readable socket is read with recvmmsg, up to BATCH datagrams per
call (portunus.dataplane.mmsg), and what came from one client goes on with
one sendmmsg on its flow's connected upstream socket; replies the same way
back, every datagram addressed to the client. Each datagram keeps its own
slot and length (never merged or split), and a flow's datagrams leave in the
order they came: a run stops at the first one the kernel refuses and the
rest of the run is dropped (counted), never held back. The flow lookup,
policing check and counting are done once per run of datagrams from one
client, not once per datagram, unless a bandwidth cap is set (then each
datagram is policed, in order). Counters: bytes and datagrams each way. The forwarder's add/remove run under the engine lock,
between two selector rounds (a wake-up socket interrupts the wait), so a
removed listener is closed before `remove` returns and its port can be
bound again at once.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import logging
import os
import queue
import selectors
import socket
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from portunus.dataplane.mmsg import NAME_BYTES, NAME_LEN, describe, open_batch
from portunus.dataplane.stats import RuleStats
from portunus.limits import TokenBucket, admit, charge_all, police, release

log = logging.getLogger("portunus.udp")

# Datagrams per recvmmsg/sendmmsg call. 64 spreads the ~1 us cost of a call
# (and of the Python around it) thin; more gains little and makes each round
# of the engine longer for the other sockets.
BATCH = 64
# Batches read per readiness event of one socket, so a flooded port cannot
# starve the others (the same idea as the TCP acceptor's ACCEPT_BATCH).
BATCH_ROUNDS = 4
_WOULD_BLOCK = (errno.EAGAIN, errno.EWOULDBLOCK)
# Listening sockets carry every flow of a port: ask for net.core.rmem_max /
# wmem_max (4 MiB on this host; the kernel silently clamps to its maximum).
LISTEN_BUFFER_BYTES = 4 << 20
# Upstream sockets carry one flow each; 1 MiB absorbs a burst of replies
# while the engine serves other sockets, and costs nothing until used.
UPSTREAM_RCVBUF_BYTES = 1 << 20
# Datagrams held per flow while its DNS target resolves; more are dropped.
PENDING_MAX = 64
# DNS lookups in flight at once (getaddrinfo blocks, so it runs off-thread).
RESOLVER_THREADS = 4
# Idle expiry runs every idle/4 (so a flow lives at most 1.25 x its idle
# time), at least every second, at most every 50 ms.
SWEEP_MIN_S = 0.05
SWEEP_MAX_S = 1.0


def open_udp_listener(addr: str, port: int, reuse_port: bool = False) -> socket.socket:
    """Bind a non-blocking UDP socket on addr:port (no SO_REUSEADDR: on UDP it would
    let a second process bind the same port and steal datagrams). `reuse_port`: one
    of several worker sockets on the port; the kernel keeps each flow on one of them."""
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, opt, LISTEN_BUFFER_BYTES)
            except OSError:
                pass
        sock.bind((addr, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


Candidate = tuple[int, Any]  # (address family, sockaddr)


def resolve_targets(targets: list[tuple[str, int, str | None]]) -> tuple[list[Candidate], list[str]]:
    """Resolve targets in priority order; return (candidate addresses, one error per failed target)."""
    found: list[Candidate] = []
    errors: list[str] = []
    for host, port, _proxy in targets:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except OSError as e:
            errors.append(f"{host}:{port}: cannot resolve: {e.strerror or e}")
            continue
        for family, _type, _proto, _canon, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6):
                found.append((family, sockaddr))
    return found, errors


class _Port:
    """One UDP listener (the forwarder's _Listener) and its flow table (keyed by source address)."""

    __slots__ = ("lst", "flows", "name_len")

    def __init__(self, lst: Any) -> None:
        self.lst = lst
        self.flows: dict[Any, UdpFlow] = {}
        self.name_len = NAME_LEN.get(lst.sock.family, NAME_BYTES)


class UdpFlow:
    """One client address on one port, and its upstream socket."""

    __slots__ = ("port", "key", "display", "rule", "state", "stats", "sets", "buckets_in", "buckets_out",
                 "upstream", "pending", "bytes_in", "bytes_out", "datagrams_in", "datagrams_out",
                 "last_active", "closed", "__weakref__")

    def __init__(self, port: _Port, key: Any, display: tuple[str, int], state: Any, sets: tuple[Any, ...],
                 now: float) -> None:
        self.port = port
        self.key = key            # source address as the batch reports it (raw sockaddr)
        self.display = display    # (host, port), for logs
        self.rule = state.rule
        self.state = state        # the RuleState: its `quotas` (None without a quota) are read per run
        self.stats: RuleStats = state.stats
        self.sets = sets
        self.buckets_in: tuple[TokenBucket, ...] = tuple(ls.bandwidth_in for ls in sets)
        self.buckets_out: tuple[TokenBucket, ...] = tuple(ls.bandwidth_out for ls in sets)
        self.upstream: socket.socket | None = None
        self.pending: deque[bytes] | None = None  # datagrams waiting for DNS
        # Written by the engine thread only; read (racily, monotonic) by snapshots.
        self.bytes_in = 0   # client -> target
        self.bytes_out = 0  # target -> client
        self.datagrams_in = 0
        self.datagrams_out = 0
        self.last_active = now
        self.closed = False

    def bytes_moved(self) -> tuple[int, int]:
        return self.bytes_in, self.bytes_out

    def datagrams_moved(self) -> tuple[int, int]:
        return self.datagrams_in, self.datagrams_out

    def serves(self, state: Any) -> bool:
        """True if a reloaded rule still sends this flow to the same place under the same limits."""
        old, new = self.rule, state.rule
        return (state.stats is self.stats and old.targets == new.targets
                and old.listen_port == new.listen_port and old.owner == new.owner)


def _capped(buckets: tuple[TokenBucket, ...]) -> bool:
    """True if any bucket has a rate (a cap to police against)."""
    for b in buckets:  # noqa: SIM110 - once per run of datagrams: a loop is cheaper than any(genexpr)
        if b.rate is not None:
            return True
    return False


def _quota_run_end(quotas: Any, lens: list[int], start: int, end: int) -> int:
    """End of the longest run from `start` that the quotas allow: up to and including the datagram
    that spends the budget (start when it is spent already)."""
    left = min(q.limit_bytes - q.used for q in quotas)
    k = start
    while k < end and left > 0:
        left -= lens[k]
        k += 1
    return k


def _next_run(buckets: tuple[TokenBucket, ...], lens: list[int], k: int, end: int,
              stats: RuleStats, reason: str) -> tuple[int, int]:
    """From datagram k on, drop (and count) those the cap refuses, then take the longest run that
    passes: return it as [s, e) (s == e == end when none is left). Policing as we go, in order."""
    while k < end and not police(buckets, lens[k]):
        k += 1
        stats.drop(reason)
    s = k
    if k < end:
        k += 1
        while k < end and police(buckets, lens[k]):
            k += 1
    return s, k


class UdpEngine:
    """Every UDP listener and flow of one forwarder, served by one thread.

    The interface a data plane uses: `add` / `remove` a listener, `active_flows`, `close`.
    """

    def __init__(self, forwarder: Any = None, *, batch: Any = None) -> None:
        self._forwarder = forwarder
        self._batch = batch if batch is not None else open_batch(BATCH)
        log.info("UDP engine: %s", describe(self._batch))
        self._lock = threading.Lock()
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)
        self._ports: dict[tuple[str, str, int], _Port] = {}
        self._nflows = 0
        self._resolver: ThreadPoolExecutor | None = None
        self._resolved: queue.SimpleQueue[tuple[UdpFlow, list[Candidate], list[str]]] = queue.SimpleQueue()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="udp-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ forwarder API

    def add(self, lst: Any) -> None:
        """Start serving a listener (its socket from open_udp_listener)."""
        with self._lock:
            port = _Port(lst)
            self._ports[lst.key] = port
            self._sel.register(lst.sock, selectors.EVENT_READ, port)
        self._wake()

    def remove(self, lst: Any) -> None:
        """Stop serving a listener: end its flows and close its socket before returning."""
        with self._lock:
            port = self._ports.pop(lst.key, None)
            try:
                self._sel.unregister(lst.sock)
            except (KeyError, ValueError):
                pass
            if port is not None:
                for flow in list(port.flows.values()):
                    self._evict(flow)
            lst.sock.close()
        self._wake()

    def active_flows(self) -> int:
        return self._nflows

    def close(self) -> None:
        """Close every listener and flow and stop the engine thread."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
        self._wake()
        self._thread.join(timeout=5)
        with self._lock:
            for port in list(self._ports.values()):
                for flow in list(port.flows.values()):
                    self._evict(flow)
                try:
                    self._sel.unregister(port.lst.sock)
                except (KeyError, ValueError):
                    pass
                port.lst.sock.close()
            self._ports.clear()
            self._sel.close()
        if self._resolver is not None:
            self._resolver.shutdown(wait=False, cancel_futures=True)
        self._wake_r.close()
        self._wake_w.close()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # buffer full (a wake-up is pending anyway) or closed

    # ------------------------------------------------------------ engine thread

    def _run(self) -> None:
        next_sweep = time.monotonic() + SWEEP_MAX_S
        while True:
            timeout = max(0.0, next_sweep - time.monotonic())
            try:
                events = self._sel.select(timeout)
            except OSError:
                if self._closing:
                    return
                raise
            with self._lock:
                if self._closing:
                    return
                now = time.monotonic()
                for key, _mask in events:
                    data = key.data
                    if data is None:
                        self._drain_wake()
                    elif type(data) is UdpFlow:
                        if not data.closed:
                            self._from_target(data, now)
                    else:
                        self._from_clients(data, now)
                self._finish_resolutions(now)
                if now >= next_sweep:
                    next_sweep = now + self._sweep(now)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def _from_clients(self, port: _Port, now: float) -> None:
        """Read batches from a listener; pass each client's datagrams on in order, a run at a time."""
        batch = self._batch
        sock = port.lst.sock
        for _ in range(BATCH_ROUNDS):
            try:
                n = batch.recv(sock)
            except OSError:
                return  # socket closed under us by a reload; nothing to read
            if n == 0:
                return
            lens = batch.lengths(n)
            if batch.same_source(n):  # the common case: one busy client fills the batch
                i = 0
                key = batch.name(0, port.name_len)
                while i < n:
                    i = self._client_run(port, key, i, n, lens, now)
            else:
                keys = batch.names(n, port.name_len)
                i = 0
                while i < n:
                    key = keys[i]
                    j = i + 1
                    while j < n and keys[j] == key:
                        j += 1
                    while i < j:
                        i = self._client_run(port, key, i, j, lens, now)
            if n < batch.slots:
                return

    def _client_run(self, port: _Port, key: Any, i: int, j: int, lens: list[int], now: float) -> int:
        """Forward datagrams i..j-1, all from client `key`; return where to go on (j, or after a
        datagram that ended the flow: the rest then starts a new one, as it would have one by one)."""
        batch = self._batch
        state = port.lst.state
        flow = port.flows.get(key)
        if flow is not None and flow.rule is not state.rule:
            if flow.serves(state):
                flow.rule, flow.state = state.rule, state
            else:
                self._evict(flow)  # reload changed its target or owner: start over
                flow = None
        while flow is None:  # each datagram from an unknown client is one new-flow attempt
            flow = self._open_flow(port, key, batch.display(key), state, now)
            if flow is None:
                i += 1
                if i == j:
                    return j
        flow.last_active = now
        capped = _capped(flow.buckets_in)
        upstream = flow.upstream
        k = i
        while k < j:
            if capped:
                run_start, run_end = _next_run(flow.buckets_in, lens, k, j, flow.stats, "bandwidth_in")
                if run_start == run_end:
                    break
            else:
                run_start, run_end = k, j
            quotas = state.quotas
            if quotas is not None:
                run_end = _quota_run_end(quotas, lens, run_start, run_end)
                if run_end == run_start:
                    self._quota_cut(flow, j - run_start)
                    return j
            k = run_end
            if upstream is None:  # target still resolving: hold a few, drop the rest
                for m in range(run_start, run_end):
                    if flow.pending is not None and len(flow.pending) < PENDING_MAX:
                        flow.pending.append(batch.payload(m, lens[m]).tobytes())
                    else:
                        flow.stats.drop("resolving")
                continue
            sent, err = batch.send(upstream, run_start, lens[run_start:run_end])
            if sent:
                nbytes = sum(lens[run_start:run_start + sent])
                flow.bytes_in += nbytes
                flow.datagrams_in += sent
                if quotas is not None and charge_all(quotas, nbytes):
                    self._quota_cut(flow, j - run_start - sent)
                    return j
            if err == 0:
                continue
            if err in _WOULD_BLOCK:
                # Socket buffer full: drop the rest of this run (never reorder by holding some back).
                flow.stats.drop("upstream_buffer_full", run_end - run_start - sent)
                continue
            self._upstream_error(flow, OSError(err, os.strerror(err)))
            return run_start + sent + 1  # the failed datagram is lost; later ones open a new flow
        return j

    def _from_target(self, flow: UdpFlow, now: float) -> None:
        """Read batches of replies on a flow's upstream socket and send them to its client."""
        upstream = flow.upstream
        if upstream is None:
            return
        batch = self._batch
        lsock = flow.port.lst.sock
        for _ in range(BATCH_ROUNDS):
            try:
                n = batch.recv(upstream)
            except OSError as exc:
                self._upstream_error(flow, exc)
                return
            if n == 0:
                return
            flow.last_active = now
            lens = batch.lengths(n)
            capped = _capped(flow.buckets_out)
            quotas = flow.state.quotas
            k = 0
            while k < n:
                if capped:
                    run_start, run_end = _next_run(flow.buckets_out, lens, k, n, flow.stats, "bandwidth_out")
                else:
                    run_start, run_end = k, n
                if quotas is not None and run_start < run_end:
                    run_end = _quota_run_end(quotas, lens, run_start, run_end)
                    if run_end == run_start:
                        self._quota_cut(flow, n - run_start)
                        return
                k = run_end
                while run_start < run_end:
                    sent, err = batch.send_to(lsock, run_start, lens[run_start:run_end], flow.key)
                    if sent:
                        nbytes = sum(lens[run_start:run_start + sent])
                        flow.bytes_out += nbytes
                        flow.datagrams_out += sent
                        if quotas is not None and charge_all(quotas, nbytes):
                            self._quota_cut(flow, n - run_start - sent)
                            return
                    if err == 0:
                        break
                    if err in _WOULD_BLOCK:
                        flow.stats.drop("client_buffer_full", run_end - run_start - sent)
                        break
                    flow.stats.drop("send_error")  # this one datagram; the client may take the next
                    run_start += sent + 1
            if n < batch.slots:
                return

    def _quota_cut(self, flow: UdpFlow, dropped: int) -> None:
        """The owner's quota is spent: drop (and count) the `dropped` datagrams left, end the flow."""
        if dropped > 0:
            flow.stats.drop("quota", dropped)
        flow.stats.count("quota_cuts")
        log.debug('rule "%s": traffic quota spent: flow %s ended', flow.rule.name, flow.display)
        self._evict(flow)

    def _upstream_error(self, flow: UdpFlow, e: OSError) -> None:
        """ICMP unreachable (ECONNREFUSED & co) from the target: the flow is over."""
        flow.stats.count("connect_failures")
        if e.errno != errno.ECONNREFUSED:
            flow.stats.drop("upstream_error")
        log.debug('rule "%s": flow %s evicted: %s', flow.rule.name, flow.display, e.strerror or e)
        self._evict(flow)

    # ------------------------------------------------------------ flow lifecycle

    def _open_flow(self, port: _Port, key: Any, display: tuple[str, int], state: Any,
                   now: float) -> UdpFlow | None:
        rule = state.rule
        stats: RuleStats = state.stats
        sets = state.limit_sets()
        verdict = admit(sets, max_flows=rule.udp_max_flows)  # the rule's set comes first
        if verdict.reason is not None:
            stats.reject(verdict.reason)
            return None
        flow = UdpFlow(port, key, display, state, sets, now)
        port.flows[key] = flow
        self._nflows += 1
        stats.opened(flow, False)
        targets = rule.targets_for(port.lst.key[2])
        if all(_is_ip_literal(h) for h, _p, _x in targets):
            found, errors = resolve_targets(targets)  # numeric: no lookup, no blocking
            self._connect(flow, found, errors)
            if flow.closed:
                stats.drop("no_target")
        else:
            flow.pending = deque()
            if self._resolver is None:
                self._resolver = ThreadPoolExecutor(RESOLVER_THREADS, thread_name_prefix="udp-dns")
            fut = self._resolver.submit(resolve_targets, targets)
            fut.add_done_callback(functools.partial(self._on_resolved, flow))
        return None if flow.closed else flow

    def _on_resolved(self, flow: UdpFlow, fut: Any) -> None:
        if fut.cancelled():
            return
        exc = fut.exception()
        found, errors = ([], [f"resolver failed: {exc}"]) if exc else fut.result()
        self._resolved.put((flow, found, errors))
        self._wake()

    def _finish_resolutions(self, now: float) -> None:
        while True:
            try:
                flow, found, errors = self._resolved.get_nowait()
            except queue.Empty:
                return
            if flow.closed:
                continue
            self._connect(flow, found, errors)
            if flow.closed:
                continue
            pending, flow.pending = flow.pending or deque(), None
            for data in pending:
                if flow.closed or flow.upstream is None:
                    break
                quotas = flow.state.quotas
                if quotas is not None and min(q.limit_bytes - q.used for q in quotas) <= 0:
                    self._quota_cut(flow, 0)
                    break
                try:
                    flow.upstream.send(data)
                except BlockingIOError:
                    flow.stats.drop("upstream_buffer_full")
                    continue
                except OSError as e:
                    self._upstream_error(flow, e)
                    break
                flow.bytes_in += len(data)
                flow.datagrams_in += 1
                if quotas is not None and charge_all(quotas, len(data)):
                    self._quota_cut(flow, 0)
                    break

    def _connect(self, flow: UdpFlow, found: list[Candidate], errors: list[str]) -> None:
        """Open the flow's upstream socket to the first candidate that connects; evict if none."""
        for family, sockaddr in found:
            up = socket.socket(family, socket.SOCK_DGRAM)
            try:
                up.setblocking(False)
                try:
                    up.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UPSTREAM_RCVBUF_BYTES)
                except OSError:
                    pass
                up.connect(sockaddr)  # UDP connect: no packet, fails only if unroutable
            except OSError as e:
                up.close()
                errors.append(f"{sockaddr[0]}:{sockaddr[1]}: {e.strerror or e}")
                continue
            flow.upstream = up
            self._sel.register(up, selectors.EVENT_READ, flow)
            return
        flow.stats.count("connect_failures")
        if flow.pending:
            flow.stats.drop("no_target", len(flow.pending))
        log.info('rule "%s": no UDP target usable: %s', flow.rule.name, "; ".join(errors) or "no address")
        self._evict(flow)

    def _evict(self, flow: UdpFlow) -> None:
        if flow.closed:
            return
        flow.closed = True
        up = flow.upstream
        if up is not None:
            try:
                self._sel.unregister(up)
            except (KeyError, ValueError):
                pass
            up.close()
        if flow.port.flows.get(flow.key) is flow:
            del flow.port.flows[flow.key]
        self._nflows -= 1
        release(flow.sets, flow=True)
        flow.stats.closed(flow)

    def _sweep(self, now: float) -> float:
        """Evict idle flows; return seconds until the next sweep."""
        interval = SWEEP_MAX_S
        for port in list(self._ports.values()):
            idle_s = port.lst.state.rule.udp_flow_idle_secs
            interval = min(interval, idle_s / 4)
            deadline = now - idle_s
            for flow in [f for f in port.flows.values() if f.last_active <= deadline]:
                self._evict(flow)
        return max(SWEEP_MIN_S, interval)
