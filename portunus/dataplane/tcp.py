"""TCP connections on the event loop: dial, PROXY header, relay both ways, half-close, teardown.

Each forwarded connection is two sockets registered once, edge-triggered,
on the worker's event loop, and two `Relay`s (client -> target "in",
target -> client "out"). A relay remembers whether its source is readable
and its destination writable, and moves bytes while both hold:

* small exchanges are copied: one `recv_into` a buffer shared by the whole
  loop, one `send`; a read shorter than asked means the socket is drained,
  so no extra read just to see EAGAIN (unless the peer already sent FIN);
* once a read fills the buffer (bulk), the relay switches to splice
  (socket -> pipe -> socket, SPLICE_F_NONBLOCK): the payload never enters
  Python memory. The pipe comes from a pool and goes back as soon as it is
  empty, so idle connections hold no pipe and no buffer;
* capped rules stay on the copy path: each chunk takes its tokens first and
  waits on a loop timer (not a sleeping thread) when the bucket is in debt;
* a rule whose owner has a traffic quota charges every payload byte the
  destination took (after each send or splice, both ways) and the
  connection is reset as soon as a charge spends the budget: at most one
  chunk past it. Without a quota `quotas` is None: one check per chunk.

Semantics kept from the threaded data plane: EOF one way becomes
shutdown(SHUT_WR) the other way while the other way keeps flowing; a reset
or socket error tears down both sides with RST (SO_LINGER 0); no byte is
lost, duplicated or reordered; bytes are counted when the destination took
them.

This is the hot path of the forwarder: per-connection cost is measured by
`configs/connrate.yaml`. Sockets are `_socket.socket` (the C type, without
socket.py's Python-level wrappers), accepted sockets stay in blocking mode
and are read and written with MSG_DONTWAIT (one ioctl less per connection;
splice needs O_NONBLOCK, set when a relay switches to it), and objects drop
their references to each other at teardown so reference counting, not the
cyclic GC, frees them.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
from _socket import socket as RawSocket
from collections.abc import Sequence
from typing import Any

from portunus.dataplane.loop import (
    EDGE_ALL,
    EPOLLERR,
    EPOLLET,
    EPOLLHUP,
    EPOLLIN,
    EPOLLOUT,
    EPOLLRDHUP,
)
from portunus.dataplane.proxy_protocol import build_header
from portunus.limits import charge_all

log = logging.getLogger("portunus.tcp")

LINGER_RESET = struct.pack("ii", 1, 0)  # l_onoff=1, l_linger=0: close() sends RST
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
MSG_DONTWAIT = socket.MSG_DONTWAIT
_READ_EVENTS = EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR
_WRITE_EVENTS = EPOLLOUT | EPOLLHUP | EPOLLERR
_END_EVENTS = EPOLLRDHUP | EPOLLHUP | EPOLLERR
# Sockets join the loop for reads only: a socket that has never been full raises no
# EPOLLOUT events (two handler calls per connection saved); a relay arms EPOLLOUT on
# its destination the first time a send would block, and a dial in progress needs it.
_EDGE_READ = EPOLLIN | EPOLLRDHUP | EPOLLET
_SOL_SOCKET, _SO_LINGER, _SO_ERROR = socket.SOL_SOCKET, socket.SO_LINGER, socket.SO_ERROR
_IPPROTO_TCP, _TCP_NODELAY = socket.IPPROTO_TCP, socket.TCP_NODELAY
_SHUT_WR = socket.SHUT_WR
_STREAM_NONBLOCK = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
_EINPROGRESS, _EISCONN, _EALREADY = errno.EINPROGRESS, errno.EISCONN, errno.EALREADY

# Copy path buffer, one per event loop (shared by every connection: a relay
# copies out of it only what the destination did not take at once).
# 256 KiB: a recv drains a loopback socket's typical backlog in one call.
COPY_BUFFER_BYTES = 256 * 1024
# A read at least this large means bulk transfer: switch the relay to splice.
SPLICE_SWITCH_BYTES = 64 * 1024
# Bytes one relay moves per loop round before yielding to other connections.
RELAY_BUDGET_BYTES = 4 << 20

# Connection states.
RESOLVING, CONNECTING, OPEN, CLOSED = range(4)


class Relay:
    """One direction of a connection: src socket -> dst socket."""

    __slots__ = ("conn", "src", "dst", "src_fd", "dst_fd", "readable", "writable", "rdhup",
                 "done", "eof", "pending", "uncounted", "pipe", "pipe_n", "bytes", "splice",
                 "splice_ok", "spliced", "throttle", "paused", "other", "ctx", "held", "quotas")
    # Set by TcpConnection._connected, when both sockets exist.
    src: RawSocket
    dst: RawSocket
    src_fd: int
    dst_fd: int
    other: Relay

    def __init__(self, conn: TcpConnection, ctx: Any, splice_ok: bool, throttle: Any,
                 quotas: Any = None) -> None:
        self.conn: Any = conn
        self.ctx = ctx
        self.held: memoryview | None = None  # the copy buffer `pending` points into, if any
        self.readable = False
        self.writable = False
        self.rdhup = False       # the peer sent FIN: read until EOF, a short read proves nothing
        self.done = False        # EOF passed on (or the connection ended)
        self.eof = False         # EOF read from src, waiting for pending bytes to leave
        self.pending: memoryview | None = None  # copied bytes dst did not take yet
        self.uncounted = 0       # leading bytes of `pending` that are not payload (PROXY header)
        self.pipe: tuple[int, int, int] | None = None
        self.pipe_n = 0          # bytes in the pipe not yet written to dst
        self.bytes = 0           # payload bytes dst took
        self.splice = False      # bulk seen: move bytes with splice from now on
        self.splice_ok = splice_ok
        self.spliced = False     # at least one splice moved bytes
        self.throttle = throttle  # ThrottleGroup or None
        self.paused = False      # waiting for tokens
        self.quotas = quotas     # tuple of limits.Quota charged per send, or None

    def _blocked(self) -> None:
        """dst is full: wait until it drains (its EPOLLOUT is armed from the first time on)."""
        self.writable = False
        self.conn.arm_out(self.dst_fd)

    def run(self) -> None:
        """Move bytes while src is readable and dst writable; called on every readiness change."""
        if self.done or self.paused:
            return
        if self.pending is not None or self.pipe_n or self.eof:
            if not self.writable:
                return
            if self.pending is not None and not self._flush_pending():
                return
            if self.pipe_n and not self._flush_pipe():
                return
            if self.eof:
                self._pass_eof()
                return
        if self.splice:
            self._run_splice()
        else:
            self._run_copy()

    # ------------------------------------------------------------ copy path

    def _run_copy(self) -> None:
        ctx = self.ctx
        view = ctx.buffer
        size = ctx.buffer_bytes
        recv_into = self.src.recv_into
        send = self.dst.send
        throttle = self.throttle
        quotas = self.quotas
        budget = RELAY_BUDGET_BYTES
        while self.readable and self.writable:
            want = size if throttle is None else min(size, throttle.max_chunk())
            try:
                n = recv_into(view, want, MSG_DONTWAIT)
            except BlockingIOError:
                self.readable = False
                return
            except OSError as e:
                self.conn.abort(e)
                return
            if n == 0:
                self.eof = True
                self._pass_eof()
                return
            if throttle is not None:
                wait_s = throttle.reserve(n)
                if wait_s > 0:  # tokens taken; the chunk leaves when the debt is repaid
                    self._hold(ctx, view, 0, n)
                    self.paused = True
                    ctx.loop.call_later(wait_s, self._resume)
                    return
            try:
                m = send(view[:n], MSG_DONTWAIT)
            except BlockingIOError:
                m = 0
            except OSError as e:
                self.conn.abort(e)
                return
            self.bytes += m
            if quotas is not None and charge_all(quotas, m):
                self._quota_spent()
                return
            if m < n:
                self._hold(ctx, view, m, n)
                self._blocked()
                return
            if n < want:
                if not self.rdhup:
                    self.readable = False  # short read: the socket is drained
                    return
            elif n >= SPLICE_SWITCH_BYTES and self.splice_ok:
                self.splice = True
                self.conn.nonblocking()  # splice reads block unless the socket is O_NONBLOCK
                self._run_splice()
                return
            budget -= n
            if budget <= 0:
                ctx.loop.call_soon(self.run)
                return

    def _hold(self, ctx: Any, view: memoryview, start: int, end: int) -> None:
        """Keep view[start:end] for later without copying: this relay takes the loop's
        buffer, and the loop takes a fresh one from the pool."""
        self.held = view
        self.pending = view[start:end]
        ctx.buffer = ctx.take_buffer()

    def _flush_pending(self) -> bool:
        """Send what an earlier round left over; True when nothing is left."""
        pending = self.pending
        assert pending is not None
        try:
            m = self.dst.send(pending, MSG_DONTWAIT)
        except BlockingIOError:
            self._blocked()
            return False
        except OSError as e:
            self.conn.abort(e)
            return False
        if self.uncounted:
            skip = min(m, self.uncounted)
            self.uncounted -= skip
            m_payload = m - skip
        else:
            m_payload = m
        self.bytes += m_payload
        if self.quotas is not None and charge_all(self.quotas, m_payload):
            self._quota_spent()
            return False
        if m < len(pending):
            self.pending = pending[m:]
            self._blocked()
            return False
        self.pending = None
        if self.held is not None:
            self.ctx.give_buffer(self.held)
            self.held = None
        return True

    def _quota_spent(self) -> None:
        """The owner's quota is spent: reset the connection (it never moves another chunk)."""
        conn = self.conn
        conn.rule_state.stats.count("quota_cuts")
        log.debug('rule "%s": traffic quota spent: connection reset', conn.rule_state.rule.name)
        conn.abort()

    def _resume(self) -> None:
        self.paused = False
        if self.conn is not None and not self.conn.closed:
            self.run()

    # ------------------------------------------------------------ splice path

    def _run_splice(self) -> None:
        conn = self.conn
        pool = conn.ctx.pipes
        pipe = self.pipe
        if pipe is None:
            pipe = self.pipe = pool.get()
        r, w, size = pipe
        splice = os.splice
        src_fd, dst_fd = self.src_fd, self.dst_fd
        quotas = self.quotas
        budget = RELAY_BUDGET_BYTES
        while self.readable and self.writable:
            try:
                n = splice(src_fd, w, size, None, None, _SPLICE_FLAGS)
            except BlockingIOError:
                self.readable = False
                break
            except OSError as e:
                conn.abort(e)
                return
            if n == 0:
                self.eof = True
                break
            self.spliced = True
            try:
                m = splice(r, dst_fd, n, None, None, _SPLICE_FLAGS)
            except BlockingIOError:
                m = 0
            except OSError as e:
                self.pipe_n = n
                conn.abort(e)
                return
            self.bytes += m
            if quotas is not None and charge_all(quotas, m):
                self.pipe_n = n - m
                self._quota_spent()  # teardown releases the pipe
                return
            if m < n:
                self.pipe_n = n - m
                self._blocked()
                return  # keep the pipe: it holds bytes
            budget -= n
            if budget <= 0:
                conn.ctx.loop.call_soon(self.run)
                break
        self.pipe = None
        pool.put(pipe)  # empty: back to the pool, an idle relay holds no pipe
        if self.eof:
            self._pass_eof()

    def _flush_pipe(self) -> bool:
        assert self.pipe is not None
        try:
            m = os.splice(self.pipe[0], self.dst_fd, self.pipe_n, None, None, _SPLICE_FLAGS)
        except BlockingIOError:
            self._blocked()
            return False
        except OSError as e:
            self.conn.abort(e)
            return False
        self.bytes += m
        self.pipe_n -= m
        if self.quotas is not None and charge_all(self.quotas, m):
            self._quota_spent()
            return False
        if self.pipe_n:
            self._blocked()
            return False
        self.conn.ctx.pipes.put(self.pipe)
        self.pipe = None
        return True

    # ------------------------------------------------------------ end

    def _pass_eof(self) -> None:
        """src sent EOF and every byte reached dst: half-close dst, the other way keeps going."""
        self.done = True
        if self.other.done:
            self.conn.close()  # both ways ended: close() sends the FIN, no shutdown needed
            return
        try:
            self.dst.shutdown(_SHUT_WR)
        except OSError:
            pass


class Target:
    """One address to dial: (family, sockaddr) known, or a host name to resolve first."""

    __slots__ = ("host", "port", "proxy", "family", "addr")

    def __init__(self, host: str, port: int, proxy: str | None, family: int | None) -> None:
        self.host = host
        self.port = port
        self.proxy = proxy
        self.family = family  # None: a DNS name, resolved at connect time
        self.addr = (host, port)

    def display(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def literal_family(host: str) -> int | None:
    """AF_INET / AF_INET6 for an IP literal, None for a name that needs DNS."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return family
        except OSError:
            continue
    return None


class TcpConnection:
    """Both directions of one forwarded connection, driven by readiness events."""

    __slots__ = ("ctx", "state", "rule_state", "sets", "client", "client_fd", "upstream",
                 "upstream_fd", "peer", "relay_in", "relay_out", "targets", "attempt",
                 "attempts", "proxy", "deadline", "last_active", "seen_bytes", "closed",
                 "opened_at", "keepalive_armed", "client_nonblocking", "client_out", "upstream_out",
                 "__weakref__")

    def __init__(self, ctx: Any, client: RawSocket, client_fd: int, peer: Any, rule_state: Any,
                 targets: Sequence[Target], splice_ok: bool, throttle_in: Any,
                 throttle_out: Any, quotas: Any = None) -> None:
        self.ctx = ctx
        self.state = CONNECTING
        self.rule_state = rule_state
        self.sets = rule_state.sets
        self.client = client
        self.client_fd = client_fd
        self.upstream: RawSocket | None = None
        self.upstream_fd = -1
        self.peer = peer
        self.relay_in = Relay(self, ctx, splice_ok, throttle_in, quotas)
        self.relay_out = Relay(self, ctx, splice_ok, throttle_out, quotas)
        self.targets = targets
        self.attempt = 0
        self.attempts: list[str] | None = None  # why earlier targets failed, if any did
        self.proxy: str | None = None
        self.deadline = 0.0
        self.last_active = self.opened_at = ctx.loop.now
        self.seen_bytes = 0  # bytes moved at the last idle sweep
        self.closed = False
        self.keepalive_armed = False  # upstream keepalive: set once the connection proves long-lived
        self.client_nonblocking = False
        self.client_out = False    # EPOLLOUT armed on the client socket
        self.upstream_out = False  # ... on the upstream socket

    def arm_out(self, fd: int) -> None:
        """Ask for EPOLLOUT on `fd` (one epoll_ctl, the first time a send to it blocks)."""
        if fd == self.client_fd:
            if self.client_out:
                return
            self.client_out = True
            if fd not in self.ctx.loop.handlers:  # not registered yet: start() will
                return
        elif self.upstream_out:
            return
        else:
            self.upstream_out = True
        self.ctx.modify(fd, EDGE_ALL)

    def bytes_moved(self) -> tuple[int, int]:
        return self.relay_in.bytes, self.relay_out.bytes

    def nonblocking(self) -> None:
        """Make the client socket O_NONBLOCK (needed by splice, not by recv/send with MSG_DONTWAIT)."""
        if not self.client_nonblocking:
            self.client_nonblocking = True
            self.client.setblocking(False)

    # ------------------------------------------------------------ dialing

    def start(self) -> None:
        """Dial; the client socket joins the loop after the first attempt, so that bytes
        it already sent, read at once when the dial completes at once, raise no event."""
        self._dial_next()
        if not self.closed:
            ctx = self.ctx
            ctx.register(self.client_fd, EDGE_ALL if self.client_out else _EDGE_READ)
            ctx.loop.handlers[self.client_fd] = self._on_client

    def _failed_attempt(self, reason: str) -> None:
        if self.attempts is None:
            self.attempts = []
        self.attempts.append(reason)

    def _dial_next(self) -> None:
        ctx = self.ctx
        targets = self.targets
        while self.attempt < len(targets):
            t = targets[self.attempt]
            self.attempt += 1
            if t.family is None:
                self.state = RESOLVING
                ctx.resolve(self, t)
                return
            sock = RawSocket(t.family, _STREAM_NONBLOCK)
            try:
                sock.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
                rc = sock.connect_ex(t.addr)
            except OSError as e:
                sock.close()
                self._failed_attempt(f"{t.display()}: {e.strerror or e}")
                continue
            if rc == _EINPROGRESS:
                # On loopback (and often on a LAN) the handshake is complete when
                # connect() returns: asking again saves a loop round trip of setup time.
                rc = sock.connect_ex(t.addr)
                if rc == _EISCONN:
                    rc = 0
                elif rc == _EALREADY:
                    rc = _EINPROGRESS
            if rc != _EINPROGRESS and rc != 0:
                sock.close()
                self._failed_attempt(f"{t.display()}: {os.strerror(rc)}")
                continue
            self.upstream = sock
            fd = self.upstream_fd = sock.fileno()
            self.proxy = t.proxy
            self.upstream_out = rc != 0  # a dial in progress reports completion as EPOLLOUT
            ctx.register(fd, EDGE_ALL if rc else _EDGE_READ)
            ctx.loop.handlers[fd] = self._on_upstream
            if rc == 0:
                self._connected()
                rin = self.relay_in
                if not self.closed:
                    rin.readable = True  # optimistic: the request is often here already
                    rin.run()
                return
            self.state = CONNECTING
            self.deadline = ctx.loop.now + ctx.connect_timeout_s
            ctx.connecting.add(self)
            return
        self._fail()

    def resolved(self, target: Target, addrs: list[tuple[int, str, int]], error: str | None) -> None:
        """DNS answer for `target` (on the loop thread): dial its addresses in order next."""
        if self.closed:
            return
        if error is not None:
            self._failed_attempt(f"{target.display()}: cannot resolve: {error}")
        expanded = [Target(host, port, target.proxy, fam) for fam, host, port in addrs]
        self.targets = [*self.targets[:self.attempt], *expanded, *self.targets[self.attempt:]]
        self._dial_next()

    def connect_timed_out(self) -> None:
        t = self.targets[self.attempt - 1]
        self._failed_attempt(f"{t.display()}: connect timed out after {self.ctx.connect_timeout_s:g} s")
        self._drop_upstream()
        self._dial_next()

    def _drop_upstream(self) -> None:
        self.ctx.connecting.discard(self)
        if self.upstream is not None:
            self.ctx.loop.forget(self.upstream_fd)
            self.upstream.close()
            self.upstream = None
            self.upstream_fd = -1

    def _fail(self) -> None:
        """No target accepted: reset the client at once and count it."""
        stats = self.rule_state.stats
        stats.count("connect_failures")
        attempts = self.attempts or []
        if len(attempts) > 1:
            stats.count("failovers", len(attempts) - 1)
        log.info('rule "%s": no target reachable: %s', self.rule_state.rule.name,
                 "; ".join(attempts) or "no address")
        self._teardown(reset=True)

    def _connected(self) -> None:
        ctx = self.ctx
        if self.state == CONNECTING:
            ctx.connecting.discard(self)
        if self.attempts:  # each failed attempt before this one was a failover
            self.rule_state.stats.count("failovers", len(self.attempts))
        up = self.upstream
        assert up is not None
        ufd = self.upstream_fd
        rin, rout = self.relay_in, self.relay_out
        client, cfd = self.client, self.client_fd
        rin.src, rin.src_fd, rin.dst, rin.dst_fd, rin.other = client, cfd, up, ufd, rout
        rout.src, rout.src_fd, rout.dst, rout.dst_fd, rout.other = up, ufd, client, cfd, rin
        rin.writable = rout.writable = True  # fresh sockets have room; EAGAIN will say otherwise
        self.state = OPEN
        self.opened_at = ctx.loop.now
        self.rule_state.stats.opened(self, rin.splice_ok)
        if self.proxy:
            try:
                header = build_header(self.proxy, self.peer, self.client.getsockname())
            except OSError as e:
                log.info('rule "%s": PROXY header not sent: %s', self.rule_state.rule.name, e)
                self.abort(e)
                return
            rin.pending = memoryview(header)
            rin.uncounted = len(header)

    # ------------------------------------------------------------ events

    def _on_client(self, mask: int) -> None:
        if mask & _READ_EVENTS:
            rin = self.relay_in
            rin.readable = True
            if mask & _END_EVENTS:
                rin.rdhup = True
            if self.state == OPEN:
                rin.run()
        if mask & _WRITE_EVENTS:
            rout = self.relay_out
            rout.writable = True
            if self.state == OPEN and not self.closed:
                rout.run()

    def _on_upstream(self, mask: int) -> None:
        if self.state != OPEN:
            if self.state != CONNECTING:
                return
            if mask & (EPOLLERR | EPOLLHUP):
                up = self.upstream
                assert up is not None
                err = up.getsockopt(_SOL_SOCKET, _SO_ERROR) or errno.ECONNREFUSED
                t = self.targets[self.attempt - 1]
                self._failed_attempt(f"{t.display()}: {os.strerror(err)}")
                self._drop_upstream()
                self._dial_next()
                return
            if not mask & EPOLLOUT:
                return
            self._connected()
            if self.closed:
                return
        if mask & _READ_EVENTS:
            rout = self.relay_out
            rout.readable = True
            if mask & _END_EVENTS:
                rout.rdhup = True
            rout.run()
        if mask & _WRITE_EVENTS and not self.closed:
            rin = self.relay_in
            rin.writable = True
            rin.run()

    # ------------------------------------------------------------ teardown

    def abort(self, error: BaseException | None = None) -> None:
        """Tear down both sides with RST (peer reset, socket error, drain deadline)."""
        if self.closed:
            return
        if error is not None:
            log.debug('rule "%s": connection reset: %s', self.rule_state.rule.name, error)
        self._teardown(reset=True)

    def close(self) -> None:
        """Both directions ended cleanly: close both sockets."""
        if not self.closed:
            self._teardown(reset=False)

    def expire(self) -> None:
        """Idle for longer than the rule's idle timeout: close both sides (FIN)."""
        if not self.closed:
            log.debug('rule "%s": idle connection closed after %g s', self.rule_state.rule.name,
                      self.rule_state.idle_timeout_s)
            self._teardown(reset=False)

    def _teardown(self, reset: bool) -> None:
        self.closed = True
        opened = self.state == OPEN
        self.state = CLOSED
        ctx = self.ctx
        handlers = ctx.loop.handlers
        rin, rout = self.relay_in, self.relay_out
        rin.done = rout.done = True
        if rin.pipe is not None or rout.pipe is not None:
            _release_pipe(ctx.pipes, rin)
            _release_pipe(ctx.pipes, rout)
        handlers.pop(self.client_fd, None)
        if reset:
            try:
                self.client.setsockopt(_SOL_SOCKET, _SO_LINGER, LINGER_RESET)
            except OSError:
                pass
        self.client.close()
        up = self.upstream
        if up is not None:
            handlers.pop(self.upstream_fd, None)
            if reset:
                try:
                    up.setsockopt(_SOL_SOCKET, _SO_LINGER, LINGER_RESET)
                except OSError:
                    pass
            up.close()
            if not opened:
                ctx.connecting.discard(self)
        ctx.closed(self, opened)
        # Break the reference cycles (relay <-> relay, relay -> connection) so
        # reference counting frees this connection now, not the cyclic GC later.
        rin.conn = rout.conn = None
        rin.other = rout.other = rin.pending = rout.pending = None  # type: ignore[assignment]
        for relay in (rin, rout):
            if relay.held is not None:
                ctx.give_buffer(relay.held)
                relay.held = None


def _release_pipe(pool: Any, relay: Relay) -> None:
    pipe, relay.pipe = relay.pipe, None
    if pipe is not None:
        if relay.pipe_n:
            pool.discard(pipe)  # holds bytes: never reuse
        else:
            pool.put(pipe)
        relay.pipe_n = 0
