"""The recvmmsg/sendmmsg binding (and its portable twin) on real loopback sockets."""

from __future__ import annotations

import errno
import os
import random
import socket
import time

import pytest

from portunus.dataplane.mmsg import (
    AVAILABLE,
    GSO_AVAILABLE,
    NAME_LEN,
    DatagramBatch,
    PortableBatch,
    sockaddr_tuple,
)

# The largest payload one IPv4 UDP datagram can carry (65535 - 20 IP - 8 UDP).
MAX_V4_PAYLOAD = 65507
BATCHES = [pytest.param(DatagramBatch, id="mmsg",
                        marks=pytest.mark.skipif(not AVAILABLE, reason="no recvmmsg here")),
           pytest.param(PortableBatch, id="portable")]


def udp(family: int = socket.AF_INET, buf_bytes: int = 8 << 20) -> socket.socket:
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buf_bytes)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, buf_bytes)
    s.bind((host, 0))
    return s


def recv_n(batch, sock: socket.socket, n: int, timeout_s: float = 5.0) -> tuple[list[int], list, list[bytes]]:
    """Batch-receive until n datagrams came: (lengths, source keys, payloads), in arrival order."""
    lens: list[int] = []
    keys: list = []
    data: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(lens) < n and time.monotonic() < deadline:
        got = batch.recv(sock)
        if not got:
            time.sleep(0.001)
            continue
        ln = batch.lengths(got)
        lens += ln
        keys += batch.names(got, NAME_LEN[sock.family])
        data += [batch.payload(i, ln[i]).tobytes() for i in range(got)]
    return lens, keys, data


@pytest.mark.parametrize("kind", BATCHES)
def test_recv_on_an_empty_socket_returns_zero(kind):
    with udp() as s:
        assert kind(4).recv(s) == 0


@pytest.mark.parametrize("kind", BATCHES)
def test_random_sizes_up_to_the_largest_datagram_keep_boundaries_and_order(kind):
    rng = random.Random(7)
    sizes = [rng.randint(1, MAX_V4_PAYLOAD) for _ in range(60)] + [1, MAX_V4_PAYLOAD, 2, MAX_V4_PAYLOAD - 1]
    msgs = [os.urandom(n) for n in sizes]
    batch = kind(16)
    with udp() as a, udp() as b, udp() as sink:
        for m in msgs:
            b.sendto(m, a.getsockname())
        lens, keys, data = recv_n(batch, a, len(msgs))
        assert lens == sizes and data == msgs
        assert {batch.display(k) for k in keys} == {b.getsockname()}
        # Pass them on in slot order, 16 at a time, through a connected socket: same datagrams arrive.
        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        up.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        up.connect(sink.getsockname())
        out: list[bytes] = []
        for start in range(0, len(msgs), 16):
            chunk = msgs[start:start + 16]
            for m in chunk:
                b.sendto(m, a.getsockname())
            got_lens, _keys, _data = recv_n(batch, a, len(chunk))
            assert batch.send(up, 0, got_lens) == (len(chunk), 0)
            out += recv_n(batch, sink, len(chunk))[2]
        up.close()
        assert out == msgs


@pytest.mark.parametrize("kind", BATCHES)
def test_a_batch_holds_at_most_its_slots_and_the_rest_waits(kind):
    batch = kind(8)
    with udp() as a, udp() as b:
        for i in range(20):
            b.sendto(b"%d" % i, a.getsockname())
        time.sleep(0.05)
        assert batch.recv(a) == 8
        assert [batch.payload(i, n).tobytes() for i, n in enumerate(batch.lengths(8))] == [b"%d" % i for i in range(8)]
        assert batch.same_source(8)
        assert batch.recv(a) == 8 and batch.recv(a) == 4 and batch.recv(a) == 0


@pytest.mark.parametrize("kind", BATCHES)
def test_sources_are_told_apart_and_send_to_reaches_each(kind):
    batch = kind(8)
    with udp() as a, udp() as b, udp() as c:
        b.sendto(b"from b", a.getsockname())
        c.sendto(b"from c", a.getsockname())
        b.sendto(b"b again", a.getsockname())
        lens, keys, _ = recv_n(batch, a, 3)
        assert [batch.display(k) for k in keys] == [b.getsockname(), c.getsockname(), b.getsockname()]
        assert keys[0] == keys[2] != keys[1]
        assert not batch.same_source(3)
        # Reply to c with datagrams 0 and 2, from a (unconnected): c gets both, in order.
        assert batch.send_to(a, 2, [lens[2]], keys[1]) == (1, 0)
        assert batch.send_to(a, 0, [lens[0]], keys[1]) == (1, 0)
        c.settimeout(2)
        assert [c.recv(100), c.recv(100)] == [b"b again", b"from b"]


@pytest.mark.parametrize("kind", BATCHES)
def test_ipv6_sources(kind):
    batch = kind(4)
    with udp(socket.AF_INET6) as a, udp(socket.AF_INET6) as b:
        b.sendto(b"six", a.getsockname())
        lens, keys, data = recv_n(batch, a, 1)
        assert data == [b"six"]
        assert batch.display(keys[0]) == b.getsockname()[:2]
        assert batch.send_to(a, 0, lens, keys[0]) == (1, 0)
        b.settimeout(2)
        assert b.recvfrom(100) == (b"six", a.getsockname())


@pytest.mark.parametrize("kind", BATCHES)
def test_icmp_port_unreachable_surfaces_as_econnrefused(kind):
    batch = kind(4)
    with udp() as a, udp() as b, udp() as gone:
        dead = gone.getsockname()
        gone.close()  # nothing listens there now: the kernel answers with ICMP port unreachable
        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        up.connect(dead)
        b.sendto(b"x", a.getsockname())
        lens, _keys, _data = recv_n(batch, a, 1)
        assert batch.send(up, 0, lens) == (1, 0)
        time.sleep(0.05)
        with pytest.raises(OSError) as err:
            batch.recv(up)
        assert err.value.errno == errno.ECONNREFUSED
        up.close()


@pytest.mark.skipif(not AVAILABLE, reason="no recvmmsg here")
def test_send_reports_the_failure_and_sends_nothing_after_it():
    batch = DatagramBatch(4)
    with udp() as a, udp() as b:
        for m in (b"1", b"2", b"3"):
            b.sendto(m, a.getsockname())
        lens, _keys, _data = recv_n(batch, a, 3)
        closed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        closed.close()  # fileno() -1: EBADF on the first datagram
        assert batch.send(closed, 0, lens) == (0, errno.EBADF)


def test_raw_sockaddr_display():
    v4 = socket.AF_INET.to_bytes(2, "little") + (5353).to_bytes(2, "big") + socket.inet_aton("127.0.0.9") + bytes(8)
    assert sockaddr_tuple(v4) == ("127.0.0.9", 5353)
    v6 = (socket.AF_INET6.to_bytes(2, "little") + (443).to_bytes(2, "big") + bytes(4)
          + socket.inet_pton(socket.AF_INET6, "::1") + bytes(4))
    assert sockaddr_tuple(v6) == ("::1", 443)


SO_NO_CHECK = 11  # asm-generic/socket.h: no UDP checksum on send, which UDP GSO refuses (EINVAL)


def _roundtrip(batch, msgs: list[bytes], sender_opts: tuple = ()) -> tuple[list[bytes], object]:
    """msgs into a, one batch send on a socket connected to sink; what sink received, and the sender."""
    with udp() as a, udp() as b, udp() as sink:
        for m in msgs:
            b.sendto(m, a.getsockname())
        lens, _keys, _data = recv_n(batch, a, len(msgs))
        up = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for opt in sender_opts:
            up.setsockopt(socket.SOL_SOCKET, *opt)
        up.connect(sink.getsockname())
        assert batch.send(up, 0, lens) == (len(msgs), 0)
        got = recv_n(batch, sink, len(msgs))[2]
        refused = up in batch._no_gso
        up.close()
        return got, refused


GSO_RUNS = {
    "64x64B": [64] * 64,
    "46x1400B": [1400] * 46,
    "64x1B": [1] * 64,
    "1452B-and-1453B": [1452] * 10 + [1453] * 5,
    "shorter-last": [500] * 20 + [10] + [500] * 20,
    "mixed": [100, 100, 100, 7, 7, 1400, 1400, 1400, 3, 65000, 65000, 100],
}


@pytest.mark.skipif(not AVAILABLE, reason="no recvmmsg here")
@pytest.mark.parametrize("gso", [True, False], ids=["gso", "no-gso"])
@pytest.mark.parametrize("sizes", GSO_RUNS.values(), ids=GSO_RUNS.keys())
def test_runs_of_equal_sizes_arrive_as_the_same_datagrams(sizes, gso):
    if gso and not GSO_AVAILABLE:
        pytest.skip("kernel without UDP_SEGMENT")
    msgs = [os.urandom(n) for n in sizes]
    batch = DatagramBatch(64, gso=gso)
    got, refused = _roundtrip(batch, msgs)
    assert [len(m) for m in got] == sizes and got == msgs
    assert not refused


@pytest.mark.skipif(not AVAILABLE, reason="no recvmmsg here")
def test_a_socket_that_refuses_gso_gets_every_datagram_one_by_one_from_then_on():
    if not GSO_AVAILABLE:
        pytest.skip("kernel without UDP_SEGMENT")
    msgs = [os.urandom(64) for _ in range(40)]
    batch = DatagramBatch(64, gso=True)
    got, refused = _roundtrip(batch, msgs, sender_opts=((SO_NO_CHECK, 1),))
    assert got == msgs
    assert refused  # learnt: that socket is no longer offered GSO


def test_gso_plan_keeps_every_datagram_in_order():
    plan = DatagramBatch._gso_plan
    assert plan([64] * 130) == ([64, 64, 2], [64, 64, 64])
    assert plan([1400] * 50) == ([46, 4], [1400, 1400])
    assert plan([5, 6, 7]) is None  # nothing to group
    assert plan([2000] * 8) is None  # above GSO_MAX_SEGMENT_BYTES
    assert plan([500, 500, 10, 500]) == ([3, 1], [500, 500])
    assert plan([10, 500, 500]) == ([1, 2], [10, 500])
