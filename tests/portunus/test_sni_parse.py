"""The ClientHello parser and the route table, on real ClientHellos (Python ssl, openssl
s_client) and on hostile bytes (hypothesis)."""

from __future__ import annotations

import socket
import ssl
import struct
import subprocess
import threading
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from portunus.dataplane.sni import (
    EXACT,
    FALLBACK,
    HELLO,
    MORE,
    NO_MATCH,
    NOT_TLS,
    TOO_LARGE,
    WILDCARD,
    RouteTable,
    new_listener_tally,
    parse_client_hello,
)
from tests.support.tls import client_hello

MAX = 16389


def openssl_hello(name: str) -> bytes:
    """The first flight of `openssl s_client -servername NAME`, captured by a listener."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    got: list[bytes] = []

    def capture() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.settimeout(5)
            data = b""
            while parse_client_hello(data, MAX)[0] == MORE:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                data += chunk
            got.append(data)

    t = threading.Thread(target=capture)
    t.start()
    subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{srv.getsockname()[1]}", "-servername", name],
                   input=b"", capture_output=True, timeout=20)
    t.join(10)
    srv.close()
    return got[0]


def records(handshake: bytes, sizes: list[int]) -> bytes:
    """`handshake` framed as TLS records of the given fragment sizes (the last takes the rest)."""
    out, pos = b"", 0
    for size in [*sizes, len(handshake)]:
        frag = handshake[pos:pos + size]
        if not frag:
            break
        out += bytes([22, 3, 1]) + struct.pack("!H", len(frag)) + frag
        pos += len(frag)
    return out


def synthetic_hello(extensions: list[tuple[int, bytes]]) -> bytes:
    """A minimal TLS 1.2 ClientHello with the given extensions, as one record."""
    body = b"\x03\x03" + bytes(32) + b"\x00" + b"\x00\x02\x13\x01" + b"\x01\x00"
    exts = b"".join(struct.pack("!HH", t, len(d)) + d for t, d in extensions)
    body += struct.pack("!H", len(exts)) + exts
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return records(hs, [])


def sni_ext(*names: tuple[int, bytes]) -> bytes:
    entries = b"".join(bytes([kind]) + struct.pack("!H", len(n)) + n for kind, n in names)
    return struct.pack("!H", len(entries)) + entries


@pytest.mark.parametrize("maximum", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_python_client_hello_every_prefix_then_the_name(maximum):
    hello = client_hello("Shop.Example.COM", maximum)
    for n in range(len(hello)):
        assert parse_client_hello(hello[:n], MAX) == (MORE, None), n
    assert parse_client_hello(hello, MAX) == (HELLO, "shop.example.com")
    # Bytes after the ClientHello (early data, the next record) do not matter.
    assert parse_client_hello(hello + b"\x17\x03\x03\x00\x05hello", MAX) == (HELLO, "shop.example.com")


def test_openssl_client_hello():
    assert parse_client_hello(openssl_hello("api.example.net"), MAX) == (HELLO, "api.example.net")


def test_no_server_name_and_split_records():
    assert parse_client_hello(client_hello(None), MAX) == (HELLO, None)
    hello = client_hello("split.example.com")
    handshake = hello[5:]
    for sizes in ([1], [3, 4], [100, 1, 50], [len(handshake) - 1]):
        framed = records(handshake, sizes)
        assert parse_client_hello(framed, MAX) == (HELLO, "split.example.com"), sizes
        assert parse_client_hello(framed[:-1], MAX) == (MORE, None), sizes


def test_size_limit():
    hello = client_hello("big.example.com")
    assert parse_client_hello(hello, len(hello)) == (HELLO, "big.example.com")
    assert parse_client_hello(hello, len(hello) - 1) == (TOO_LARGE, None)
    # Known from the handshake header alone: no need to wait for the bytes.
    assert parse_client_hello(hello[:9], len(hello) - 1) == (TOO_LARGE, None)
    # Many tiny records: the limit counts bytes on the wire.
    tiny = records(hello[5:], [1] * 200)
    assert parse_client_hello(tiny[:600], 600)[0] == TOO_LARGE


@pytest.mark.parametrize(("data", "why"), [
    (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "plain text"),
    (b"SSH-2.0-OpenSSH_9.2\r\n", "ssh"),
    (b"\x16\x02\x00", "record version major 2"),
    (b"\x16\x03\x01\x00\x00", "empty record"),
    (b"\x16\x03\x01\x48\x01", "record longer than 2^14"),
    (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", "a ServerHello, not a ClientHello"),
    (b"\x16\x03\x01\x00\x04\x01\x00\x00\x05", "a ClientHello too short to be one"),
    (b"\x80\x2e\x01\x00\x02", "SSL 2 compatible hello"),
    (synthetic_hello([(0, sni_ext((0, b"a.example.com"))), (0, sni_ext((0, b"b.example.com")))]),
     "two server_name extensions"),
    (synthetic_hello([(0, sni_ext((0, b"a.example.com"), (0, b"b.example.com")))]), "two host names"),
    (synthetic_hello([(0, sni_ext((0, b"a b.example.com")))]), "a space in the name"),
    (synthetic_hello([(0, sni_ext((0, "ä.example.com".encode())))]), "not ASCII"),
    (synthetic_hello([(0, sni_ext((0, b"")))]), "empty name"),
    (synthetic_hello([(0, sni_ext((0, b"a" * 254)))]), "name longer than 253"),
    (synthetic_hello([(0, b"\x00\x10\x00\x00\x03abc")]), "server name list length beyond the extension"),
])
def test_not_tls_or_malformed(data, why):
    assert parse_client_hello(data, MAX) == (NOT_TLS, None), why


def test_synthetic_hellos_that_are_fine():
    assert parse_client_hello(synthetic_hello([(0, sni_ext((0, b"A.Example.com.")))]), MAX) == \
        (HELLO, "a.example.com")
    assert parse_client_hello(synthetic_hello([(0, sni_ext((5, b"opaque"), (0, b"x.io")))]), MAX) == (HELLO, "x.io")
    assert parse_client_hello(synthetic_hello([(13, b"\x00\x02\x04\x03")]), MAX) == (HELLO, None)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600), st.integers(min_value=1, max_value=MAX))
def test_any_bytes_give_a_verdict(data, limit):
    status, name = parse_client_hello(data, limit)
    assert status in (HELLO, MORE, NOT_TLS, TOO_LARGE)
    assert name is None or (status == HELLO and name == name.lower() and name.isascii())


_REAL = client_hello("fuzz.example.com")


@settings(max_examples=400, deadline=None)
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=len(_REAL) - 1), st.integers(0, 255)), max_size=4),
       st.integers(min_value=0, max_value=len(_REAL)))
def test_mutated_real_hellos_give_a_verdict(flips, cut):
    data = bytearray(_REAL)
    for pos, value in flips:
        data[pos] = value
    status, name = parse_client_hello(bytes(data[:cut]), MAX)
    assert status in (HELLO, MORE, NOT_TLS, TOO_LARGE)
    if status == HELLO and name is not None:
        assert len(name) <= 253 and name.isascii()


def _state(name: str, pattern: str | None) -> SimpleNamespace:
    return SimpleNamespace(rule=SimpleNamespace(name=name, sni_pattern=pattern, sni_peek_max_bytes=MAX,
                                                sni_peek_timeout_secs=5.0))


def test_route_order_exact_then_longest_wildcard_then_fallback():
    states = [_state("apex", "example.com"), _state("wide", "*.example.com"), _state("deep", "*.b.example.com"),
              _state("one", "a.b.example.com"), _state("fb", None)]
    table = RouteTable("127.0.0.1:443", states, 60.0, new_listener_tally())
    by = {s.rule.name: s for s in states}
    assert table.route("a.b.example.com") == (by["one"], EXACT)
    assert table.route("x.b.example.com") == (by["deep"], WILDCARD)
    assert table.route("x.y.b.example.com") == (by["deep"], WILDCARD)
    assert table.route("b.example.com") == (by["wide"], WILDCARD)
    assert table.route("example.com") == (by["apex"], EXACT)
    assert table.route("example.org") == (by["fb"], FALLBACK)
    assert table.route(None) == (by["fb"], FALLBACK)
    without = RouteTable("127.0.0.1:443", states[:-1], 60.0, new_listener_tally())
    assert without.route("example.org") == (None, NO_MATCH)
