"""SNI routing: read a new connection's TLS ClientHello, pick the rule by server name.

Several TCP rules may share one listening address and port when they differ
by `sni_pattern`. Such a listener accepts into a `Peek` on the forwarder's
event loop: it reads (non-blocking, never more than the listener's
`sni_peek_max_bytes`, for at most `sni_peek_timeout_secs`) until the
ClientHello is complete, parses its server_name extension
(`parse_client_hello`, a bounded parser of the TLS record and handshake
framing, written here: dpkt's, the maintained one that fits, took 6x longer
per ClientHello and cannot tell "incomplete" from "broken",
results/sni/README.md), and lets the
listener's `RouteTable` choose: exact name > longest matching wildcard >
the fallback rule (the one without a pattern) > close. A first flight that is
not TLS, is malformed, or does not fit in the limit goes to the fallback, or
is closed without one. The chosen rule then admits the connection with its
own limits, owner and counters, and a normal TcpConnection takes the socket
with the peeked bytes as the first bytes to send upstream (counted as
payload); its relays switch to splice on bulk reads as usual.

Listeners without SNI rules never come here: their accept loop is the
forwarder's, unchanged.
"""

from __future__ import annotations

import logging
import socket
import struct
from _socket import socket as RawSocket
from collections import Counter as Tally
from collections.abc import Sequence
from typing import Any

from portunus.dataplane.loop import EPOLLET, EPOLLIN, EPOLLRDHUP
from portunus.dataplane.tcp import LINGER_RESET, TcpConnection

log = logging.getLogger("portunus.sni")

# Routing results, as counted per rule (routed) and per listener (closed).
EXACT, WILDCARD, FALLBACK = "exact", "wildcard", "fallback"
NO_MATCH, NOT_TLS, TOO_LARGE, TIMEOUT, CLIENT_CLOSED = "no_match", "not_tls", "too_large", "timeout", "client_closed"
# Results that can send a connection to a rule (NOT_TLS and TOO_LARGE: to the fallback).
ROUTED_RESULTS = (EXACT, WILDCARD, FALLBACK, NOT_TLS, TOO_LARGE)
# Results that close the connection when no rule takes it.
CLOSED_RESULTS = (NO_MATCH, NOT_TLS, TOO_LARGE, TIMEOUT, CLIENT_CLOSED)

# parse_client_hello statuses (NOT_TLS and TOO_LARGE as above).
HELLO, MORE = "hello", "more"

_HANDSHAKE = 22            # TLS record content type
_CLIENT_HELLO = 1          # handshake message type
_MAX_RECORD_BYTES = 1 << 14  # TLSPlaintext.length limit (RFC 8446 5.1)
_RECORD_HEADER_BYTES = 5
_EXT_SERVER_NAME = 0
_EXT_HEADER = struct.Struct("!HH")  # extension type, length
_HOST_NAME = 0
# random (32) + version (2) + session id, cipher suites and compression lengths (1 + 2 + 1)
# and the smallest lists they may hold (one suite, one method).
_MIN_HELLO_BYTES = 2 + 32 + 1 + 2 + 2 + 1 + 1
# A DNS name is at most 253 characters (255 octets on the wire).
_MAX_NAME_CHARS = 253
_NAME_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyz0123456789-._")
# Fatal alert unrecognized_name (RFC 6066 3): what a TLS server answers a name it does not serve.
UNRECOGNIZED_NAME_ALERT = bytes([21, 3, 1, 0, 2, 2, 112])


class Malformed(Exception):
    """The bytes are not a well-formed ClientHello."""


def parse_client_hello(data: bytes | bytearray, max_bytes: int) -> tuple[str, str | None]:
    """(status, server name) of a connection's first bytes.

    status: HELLO (a complete ClientHello; the name is None when it carries no
    server_name), MORE (a valid prefix: read more), NOT_TLS (not a TLS
    handshake, or malformed), TOO_LARGE (the ClientHello cannot end within
    `max_bytes`). The name is lower-cased, without a trailing dot.
    """
    try:
        return _parse(bytes(data), max_bytes)
    except (Malformed, IndexError):
        return NOT_TLS, None


def _parse(data: bytes, max_bytes: int) -> tuple[str, str | None]:
    if not data:
        return MORE, None
    # Reassemble the handshake layer: a ClientHello may span several records.
    hs = bytearray()
    pos, end = 0, len(data)
    while pos < end:
        if data[pos] != _HANDSHAKE:
            raise Malformed  # not TLS, or a record other than the ClientHello's first
        if pos + 1 < end and data[pos + 1] != 3:
            raise Malformed  # record version major: SSL 3.0 and every TLS is 3
        if pos + _RECORD_HEADER_BYTES > end:
            break
        length = _u16(data, pos + 3)
        if not 0 < length <= _MAX_RECORD_BYTES:
            raise Malformed
        hs += data[pos + _RECORD_HEADER_BYTES:pos + _RECORD_HEADER_BYTES + length]
        pos += _RECORD_HEADER_BYTES + length
        if len(hs) >= 4:
            if hs[0] != _CLIENT_HELLO:
                raise Malformed
            body_len = hs[1] << 16 | hs[2] << 8 | hs[3]
            if body_len < _MIN_HELLO_BYTES:
                raise Malformed
            # Smallest number of bytes the whole hello can arrive in (full records).
            total = body_len + 4
            need = total + _RECORD_HEADER_BYTES * -(-total // _MAX_RECORD_BYTES)
            if need > max_bytes:
                return TOO_LARGE, None
            if len(hs) >= total:
                return HELLO, _server_name(bytes(hs[4:total]))
    if end >= max_bytes:
        return TOO_LARGE, None
    return MORE, None


def _u16(b: bytes, i: int) -> int:
    return b[i] << 8 | b[i + 1]


def _server_name(body: bytes) -> str | None:
    """The host_name of the server_name extension of a ClientHello body (RFC 8446 4.1.2, RFC 6066 3).

    Plain index arithmetic on bytes: every length is checked against the end of
    its enclosing vector before it is used (IndexError means a short vector)."""
    end = len(body)
    if body[0] != 3:
        raise Malformed  # legacy_version major
    i = 2 + 32  # legacy_version, random
    n = body[i]  # legacy_session_id
    if n > 32:
        raise Malformed
    i += 1 + n
    n = _u16(body, i)  # cipher_suites
    if n == 0 or n % 2:
        raise Malformed
    i += 2 + n
    n = body[i]  # legacy_compression_methods
    if n == 0:
        raise Malformed
    i += 1 + n
    if i == end:
        return None  # no extensions (SSL 3.0 / early TLS 1.0 clients)
    if i > end or i + 2 + _u16(body, i) != end:
        raise Malformed  # extensions must end exactly where the body ends
    i += 2
    found = False
    name: str | None = None
    unpack = _EXT_HEADER.unpack_from
    while i < end:
        if i + 4 > end:
            raise Malformed
        ext_type, n = unpack(body, i)
        i += 4
        if i + n > end:
            raise Malformed
        if ext_type == _EXT_SERVER_NAME:
            # Only one (RFC 8446 4.2): with two, this could route by one name
            # and the server answer for the other.
            if found:
                raise Malformed
            found = True
            name = _host_name(body[i:i + n])
        i += n
    return name


def _host_name(ext: bytes) -> str | None:
    end = len(ext)
    if end < 2 or 2 + _u16(ext, 0) != end or end == 2:
        raise Malformed
    i = 2
    host: bytes | None = None
    while i < end:
        if i + 3 > end:
            raise Malformed
        kind, n = ext[i], _u16(ext, i + 1)
        i += 3
        if i + n > end:
            raise Malformed
        if kind == _HOST_NAME:
            if host is not None:
                raise Malformed  # at most one name per type (RFC 6066 3)
            host = ext[i:i + n]
        i += n
    if host is None:
        return None
    host = host.lower()
    if host.endswith(b"."):
        host = host[:-1]
    if not 0 < len(host) <= _MAX_NAME_CHARS or not _NAME_CHARS.issuperset(host):
        raise Malformed
    return host.decode("ascii")


# ---------------------------------------------------------------- routing


class RouteTable:
    """The rules of one SNI listener: exact names, wildcard suffixes, the fallback.

    Built by the forwarder on the loop thread for each rule set; a peek keeps
    the table it was accepted with.
    """

    __slots__ = ("label", "exact", "wild", "fallback", "max_bytes", "timeout_s", "keepalive_s", "closed")

    def __init__(self, label: str, states: Sequence[Any], keepalive_s: float, closed: Tally[str]) -> None:
        self.label = label            # "127.0.0.1:443", for logs and the per-listener counters
        self.exact: dict[str, Any] = {}
        self.wild: dict[str, Any] = {}  # "example.com" for "*.example.com"
        self.fallback: Any = None
        for st in states:
            pattern = st.rule.sni_pattern
            if pattern is None:
                self.fallback = st
            elif pattern.startswith("*."):
                self.wild[pattern[2:]] = st
            else:
                self.exact[pattern] = st
        # Rules sharing the port may set different limits: the peek allows the most generous.
        self.max_bytes = max(st.rule.sni_peek_max_bytes for st in states)
        self.timeout_s = max(st.rule.sni_peek_timeout_secs for st in states)
        self.keepalive_s = keepalive_s  # what accepted sockets inherited from the listener
        self.closed = closed            # per-listener counts of connections no rule took

    def route(self, name: str | None) -> tuple[Any, str]:
        """(rule state or None, result) for a server name (None: the ClientHello had none)."""
        if name is not None:
            st = self.exact.get(name)
            if st is not None:
                return st, EXACT
            if self.wild:
                # Longest suffix first: "a.b.example.com" tries "b.example.com", then "example.com".
                i = name.find(".")
                while i >= 0:
                    st = self.wild.get(name[i + 1:])
                    if st is not None:
                        return st, WILDCARD
                    i = name.find(".", i + 1)
        if self.fallback is not None:
            return self.fallback, FALLBACK
        return None, NO_MATCH


def new_listener_tally() -> Tally[str]:
    """Per-listener counters, every key present from the start (a scrape copies it from another thread)."""
    return Tally(dict.fromkeys(CLOSED_RESULTS, 0))


def accept_batch(fwd: Any, lst: Any, batch: int) -> None:
    """Accept up to `batch` connections on an SNI listener; each starts a Peek."""
    accept = lst.sock._accept  # (fd, address), as in the forwarder's own accept loop
    family = lst.sock.family
    port = lst.key[2]
    table = lst.routes
    for _ in range(batch):
        try:
            fd, peer = accept()
        except BlockingIOError:
            return
        except OSError as e:
            fwd.accept_failed(lst, e)
            return
        Peek(fwd, table, RawSocket(family, socket.SOCK_STREAM, 0, fd), fd, peer, port).start()


class Peek:
    """One accepted connection whose ClientHello is being read; ends routed or closed."""

    __slots__ = ("fwd", "table", "sock", "fd", "peer", "port", "data", "timer", "watched", "done")

    def __init__(self, fwd: Any, table: RouteTable, sock: RawSocket, fd: int, peer: Any, port: int) -> None:
        self.fwd = fwd
        self.table = table
        self.sock = sock
        self.fd = fd
        self.peer = peer
        self.port = port
        self.data = bytearray()
        self.timer: Any = None
        self.watched = False
        self.done = False

    def start(self) -> None:
        # Often the ClientHello is already here: route without joining the loop at all.
        self._read()
        if self.done:
            return
        loop = self.fwd.loop
        loop.add(self.fd, self._on_event, EPOLLIN | EPOLLRDHUP | EPOLLET)
        self.watched = True
        self.timer = loop.call_later(self.table.timeout_s, self._expire)
        self.fwd.peeking.add(self)

    def _on_event(self, _mask: int) -> None:
        if not self.done:
            self._read()

    def _read(self) -> None:
        """Read what is there (edge-triggered: until EAGAIN or a verdict)."""
        data = self.data
        max_bytes = self.table.max_bytes
        recv = self.sock.recv
        while True:
            try:
                chunk = recv(max_bytes - len(data), socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            except OSError:
                self._close(CLIENT_CLOSED, reset=True)
                return
            if not chunk:
                self._close(CLIENT_CLOSED)
                return
            data += chunk
            status, name = parse_client_hello(data, max_bytes)
            if status != MORE:
                self._route(status, name)
                return

    def _expire(self) -> None:
        if not self.done:
            self._close(TIMEOUT)

    def _route(self, status: str, name: str | None) -> None:
        table = self.table
        if status == HELLO:
            state, result = table.route(name)
        else:  # NOT_TLS / TOO_LARGE: not routable by name
            state, result = table.fallback, status
        if state is None:
            if result == NO_MATCH:
                try:  # tell a TLS client why, as a server without that name would
                    self.sock.send(UNRECOGNIZED_NAME_ALERT, socket.MSG_DONTWAIT)
                except OSError:
                    pass
            log.debug("SNI listener %s: %s (server name %r): closed", table.label, result, name)
            self._close(result)
            return
        self._end()
        state.stats.routed(result)
        self.fwd.start_routed(state, self.sock, self.fd, self.peer, self.port, bytes(self.data),
                              table.keepalive_s)

    def _end(self) -> None:
        """Leave the loop: the socket is either handed over or closed next."""
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.watched:
            self.fwd.loop.remove(self.fd)  # the connection registers it again, for all events
            self.fwd.peeking.discard(self)

    def _close(self, result: str, reset: bool = False) -> None:
        self._end()
        self.table.closed[result] += 1
        if reset:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
            except OSError:
                pass
        self.sock.close()

    def abort(self) -> None:
        """Forwarder shutdown: close without routing."""
        if not self.done:
            self._end()
            self.sock.close()


class PeekedConnection(TcpConnection):
    """A TcpConnection whose first upstream bytes are the ones the peek read.

    They go out right after the PROXY header (if any) and, unlike it, count
    as payload: `uncounted` stays the header's length.
    """

    __slots__ = ("early",)

    def __init__(self, *args: Any, early: bytes) -> None:
        super().__init__(*args)
        self.early = early

    def _connected(self) -> None:
        super()._connected()
        early, self.early = self.early, b""
        if self.closed or not early:
            return
        rin = self.relay_in
        rin.pending = memoryview(early if rin.pending is None else bytes(rin.pending) + early)
