"""recvmmsg(2) / sendmmsg(2) through ctypes: many datagrams per system call.

Python's socket module has neither. A `DatagramBatch` owns N slots, each a
buffer big enough for the largest UDP payload, and the C arrays that point at
them; one `recv` fills up to N slots from a socket (boundaries kept: one slot
per datagram), one `send` passes a run of slots to a socket, each slot as one
datagram of exactly its received length, in slot order.

UDP GSO (UDP_SEGMENT, Linux >= 4.18): a run of equal-size datagrams (the
last may be shorter) goes down the stack as ONE message that the kernel cuts
into exactly those datagrams again, at the receiving socket on loopback or
in the driver / at transmit otherwise; routing, netfilter and the loopback
hop are then paid once per run instead of once per datagram (about 4x less
sender CPU per 64-byte datagram here). Boundaries stay exact: each segment
is one datagram of the size it came in with, in order. A socket whose path
refuses GSO (EINVAL/EIO, e.g. a segment larger than the path MTU) is sent to
one datagram per message from then on. `PortableBatch` is
the same interface over recvfrom_into/sendto, one system call per datagram
(platforms without recvmmsg, and a reference for tests).

Source addresses are opaque hashable keys (`names`): raw sockaddr bytes for
DatagramBatch, (host, port, ...) tuples for PortableBatch; `send_to` takes
the same key back and `display` turns it into (host, port) for logs.

Why ctypes: no compiler at install time, nothing to build; one foreign call
per batch costs about a microsecond, spread over up to N datagrams. Reading
the lengths and source addresses goes through memoryviews over the same
memory (no per-datagram ctypes access). Linux only (x86-64 and aarch64 share
this struct layout: LP64); `AVAILABLE` is False elsewhere.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import socket
import struct
import sys
import weakref
from array import array
from typing import Any

MSG_DONTWAIT = 0x40
# Largest UDP payload (IPv6 without jumbograms: 65535 - 8; IPv4's is 65507).
SLOT_BYTES = 65535
# sockaddr_in6 is the largest address a UDP socket returns (28 bytes).
NAME_BYTES = 28
NAME_LEN = {socket.AF_INET: 16, socket.AF_INET6: 28}
SOL_UDP = 17
UDP_SEGMENT = 103  # linux/udp.h
# Segments per GSO message: the kernel's UDP_MAX_SEGMENTS is 64 (128 since 6.2); stay at the lower.
GSO_MAX_SEGMENTS = 64
# One GSO message is one IP packet before segmentation: at most 65507 bytes of payload (IPv4).
GSO_MAX_BYTES = 65507
# Segments above this are sent one per message: a larger one would not fit a 1500-byte MTU
# (1500 - 40 IPv6 - 8 UDP), and a path that refuses GSO costs a failed system call to learn it.
GSO_MAX_SEGMENT_BYTES = 1452
# Errors that mean "this path cannot take a GSO message" (then: one datagram per message).
_GSO_REFUSED = {errno.EINVAL, errno.EIO, errno.EMSGSIZE, errno.EOPNOTSUPP, errno.ENOPROTOOPT}
# struct cmsghdr (size_t len, int level, int type) + uint16 gso_size, padded to 8 bytes.
_CMSG_HDR = struct.Struct("Qii")
_CMSG_LEN = _CMSG_HDR.size + 2
_CMSG_SPACE = (_CMSG_LEN + 7) & ~7


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(_Iovec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", _Msghdr), ("msg_len", ctypes.c_uint32)]


# Offsets in 32-bit words within one struct mmsghdr, for the memoryview access below.
_STRIDE_U32 = ctypes.sizeof(_Mmsghdr) // 4
_NAMELEN_U32 = _Msghdr.msg_namelen.offset // 4
_MSGLEN_U32 = _Mmsghdr.msg_len.offset // 4
# The same for iov_len within one struct iovec, in 64-bit words.
_IOV_STRIDE_U64 = ctypes.sizeof(_Iovec) // 8
_IOVLEN_U64 = _Iovec.iov_len.offset // 8


def _load() -> tuple[Any, Any] | None:
    if not sys.platform.startswith("linux") or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    try:
        recvmmsg, sendmmsg = libc.recvmmsg, libc.sendmmsg
    except AttributeError:
        return None
    recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]
    recvmmsg.restype = ctypes.c_int
    sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    sendmmsg.restype = ctypes.c_int
    return recvmmsg, sendmmsg


_FUNCS = _load()
AVAILABLE = _FUNCS is not None


def _gso_available() -> bool:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setsockopt(SOL_UDP, UDP_SEGMENT, 0)
        return True
    except OSError:
        return False


GSO_AVAILABLE = AVAILABLE and _gso_available()


class DatagramBatch:
    """N datagram slots and the mmsghdr arrays to fill them (recv) and pass them on (send).

    Not thread-safe: one batch belongs to one thread. Slot i's data is valid
    until the next `recv`.
    """

    def __init__(self, slots: int = 64, slot_bytes: int = SLOT_BYTES, *, gso: bool | None = None) -> None:
        """gso: use UDP_SEGMENT for runs of equal-size datagrams (default: if the kernel has it)."""
        if _FUNCS is None:
            raise OSError(errno.ENOSYS, "recvmmsg/sendmmsg are not available on this platform")
        self._recvmmsg, self._sendmmsg = _FUNCS
        self.slots = slots
        self.slot_bytes = slot_bytes
        self._buf = (ctypes.c_char * (slots * slot_bytes))()
        self._names = (ctypes.c_char * (slots * NAME_BYTES))()
        self._dest = (ctypes.c_char * NAME_BYTES)()  # one destination address for send_to
        self._riov = (_Iovec * slots)()
        self._siov = (_Iovec * slots)()
        self._rmsg = (_Mmsghdr * slots)()
        self._smsg = (_Mmsghdr * slots)()  # connected sockets: no address
        self._tmsg = (_Mmsghdr * slots)()  # unconnected: every entry to self._dest
        base = ctypes.addressof(self._buf)
        names = ctypes.addressof(self._names)
        dest = ctypes.addressof(self._dest)
        for i in range(slots):
            self._riov[i].iov_base = self._siov[i].iov_base = base + i * slot_bytes
            self._riov[i].iov_len = slot_bytes
            r = self._rmsg[i].msg_hdr
            r.msg_name, r.msg_namelen = names + i * NAME_BYTES, NAME_BYTES
            r.msg_iov, r.msg_iovlen = ctypes.pointer(self._riov[i]), 1
            for table in (self._smsg, self._tmsg):
                table[i].msg_hdr.msg_iov, table[i].msg_hdr.msg_iovlen = ctypes.pointer(self._siov[i]), 1
            self._tmsg[i].msg_hdr.msg_name = dest
        self._rmsg_u32 = memoryview(self._rmsg).cast("B").cast("I")
        self._msg_len = self._rmsg_u32[_MSGLEN_U32::_STRIDE_U32]
        self._namelen_in = self._rmsg_u32[_NAMELEN_U32::_STRIDE_U32]
        self._full_namelen = array("I", [NAME_BYTES] * slots)
        self._siov_len = memoryview(self._siov).cast("B").cast("Q")[_IOVLEN_U64::_IOV_STRIDE_U64]
        self._tmsg_u32 = memoryview(self._tmsg).cast("B").cast("I")
        self._tmsg_namelen = self._tmsg_u32[_NAMELEN_U32::_STRIDE_U32]
        self._buf_view = memoryview(self._buf).cast("B")
        self._names_view = memoryview(self._names).cast("B")
        self._rmsg_addr = ctypes.addressof(self._rmsg)
        self._smsg_addr = ctypes.addressof(self._smsg)
        self._tmsg_addr = ctypes.addressof(self._tmsg)
        self._msg_bytes = ctypes.sizeof(_Mmsghdr)
        # Planned messages for GSO: entry m covers slots first..first+count-1, with a cmsg if count > 1.
        self.gso = GSO_AVAILABLE if gso is None else gso
        self._no_gso: weakref.WeakSet[socket.socket] = weakref.WeakSet()
        self._gmsg = (_Mmsghdr * slots)()
        self._ctrl = (ctypes.c_char * (slots * _CMSG_SPACE))()
        for m in range(slots):
            _CMSG_HDR.pack_into(self._ctrl, m * _CMSG_SPACE, _CMSG_LEN, SOL_UDP, UDP_SEGMENT)
        gmsg_q = memoryview(self._gmsg).cast("B").cast("Q")
        words = ctypes.sizeof(_Mmsghdr) // 8
        self._g_name = gmsg_q[_Msghdr.msg_name.offset // 8::words]
        self._g_namelen = gmsg_q[_Msghdr.msg_namelen.offset // 8::words]
        self._g_iov = gmsg_q[_Msghdr.msg_iov.offset // 8::words]
        self._g_iovlen = gmsg_q[_Msghdr.msg_iovlen.offset // 8::words]
        self._g_control = gmsg_q[_Msghdr.msg_control.offset // 8::words]
        self._g_controllen = gmsg_q[_Msghdr.msg_controllen.offset // 8::words]
        self._g_segment = memoryview(self._ctrl).cast("B").cast("H")[_CMSG_HDR.size // 2::_CMSG_SPACE // 2]
        self._gmsg_addr = ctypes.addressof(self._gmsg)
        self._siov_addr = ctypes.addressof(self._siov)
        self._ctrl_addr = ctypes.addressof(self._ctrl)
        self._dest_addr = dest

    # ------------------------------------------------------------ receive

    def recv(self, sock: socket.socket, n: int | None = None) -> int:
        """Read up to n (default: all slots) datagrams without blocking; 0 if none is waiting.

        Raises OSError for a socket error (e.g. ECONNREFUSED after an ICMP
        port unreachable on a connected socket).
        """
        n = self.slots if n is None else n
        self._namelen_in[:n] = self._full_namelen[:n]  # the kernel overwrote them with the last sizes
        got = self._recvmmsg(sock.fileno(), self._rmsg_addr, n, MSG_DONTWAIT, None)
        if got < 0:
            e = ctypes.get_errno()
            if e in (errno.EAGAIN, errno.EWOULDBLOCK):
                return 0
            raise OSError(e, os.strerror(e))
        return got

    def lengths(self, n: int) -> list[int]:
        """Sizes of the first n received datagrams."""
        return self._msg_len[:n].tolist()

    @staticmethod
    def display(name: bytes) -> tuple[str, int]:
        return sockaddr_tuple(name)

    def names(self, n: int, name_len: int) -> list[bytes]:
        """Raw source addresses (sockaddr, name_len bytes) of the first n received datagrams."""
        raw = self._names_view[:n * NAME_BYTES].tobytes()
        return [raw[i:i + name_len] for i in range(0, n * NAME_BYTES, NAME_BYTES)]

    def same_source(self, n: int) -> bool:
        """True if the first n datagrams certainly share one source address (a fast check; False may be wrong)."""
        raw = self._names_view[:n * NAME_BYTES].tobytes()
        return raw == raw[:NAME_BYTES] * n

    def name(self, i: int, name_len: int) -> bytes:
        """Raw source address of datagram i."""
        return self._names_view[i * NAME_BYTES:i * NAME_BYTES + name_len].tobytes()

    def payload(self, i: int, length: int) -> memoryview:
        """Datagram i's bytes (a view, valid until the next recv)."""
        start = i * self.slot_bytes
        return self._buf_view[start:start + length]

    # ------------------------------------------------------------ send

    def send(self, sock: socket.socket, start: int, lengths: list[int]) -> tuple[int, int]:
        """Send slots start.. (one datagram each, of the given lengths) on a connected socket.

        Returns (datagrams sent, errno of the first that failed or 0). Sent
        ones always form a prefix: datagrams after a failure are not tried.
        """
        return self._send(sock, start, lengths, None)

    def send_to(self, sock: socket.socket, start: int, lengths: list[int], name: bytes) -> tuple[int, int]:
        """Like `send`, every datagram to the address `name` (raw sockaddr)."""
        return self._send(sock, start, lengths, name)

    def _send(self, sock: socket.socket, start: int, lengths: list[int], name: bytes | None) -> tuple[int, int]:
        count = len(lengths)
        self._siov_len[start:start + count] = array("Q", lengths)
        if name is not None:
            ctypes.memmove(self._dest, name, len(name))
        plan = self._gso_plan(lengths) if self.gso and count > 1 and sock not in self._no_gso else None
        if plan is not None:
            sent, err, refused = self._send_gso(sock.fileno(), start, plan, name)
            if not refused:
                return sent, err
            self._no_gso.add(sock)  # this path takes no GSO: the rest, and from now on, one per message
            start, lengths = start + sent, lengths[sent:]
            count = len(lengths)
        else:
            sent = 0
        if name is None:
            done, err = self._send_loop(sock.fileno(), self._smsg_addr, start, count)
        else:
            self._tmsg_namelen[start:start + count] = array("I", [len(name)] * count)
            done, err = self._send_loop(sock.fileno(), self._tmsg_addr, start, count)
        return sent + done, err

    @staticmethod
    def _gso_plan(lengths: list[int]) -> tuple[list[int], list[int]] | None:
        """Split a run into GSO messages: (datagrams per message, segment size per message),
        or None when no message would carry more than one datagram."""
        n = len(lengths)
        size = lengths[0]
        if lengths.count(size) == n:  # one size throughout: the common case (e.g. a steady stream)
            if size > GSO_MAX_SEGMENT_BYTES or size == 0:
                return None
            per = min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // size)
            counts = [per] * (n // per) + ([n % per] if n % per else [])
            return counts, [size] * len(counts)
        counts, sizes = [], []
        i = 0
        while i < n:
            size = lengths[i]
            j = i + 1
            if 0 < size <= GSO_MAX_SEGMENT_BYTES:
                limit = min(n, i + min(GSO_MAX_SEGMENTS, GSO_MAX_BYTES // size))
                while j < limit and lengths[j] == size:
                    j += 1
                if j < limit and 0 < lengths[j] < size:  # a shorter last segment is allowed
                    j += 1
            counts.append(j - i)
            sizes.append(size)
            i = j
        return (counts, sizes) if len(counts) < n else None

    def _send_gso(self, fd: int, start: int, plan: tuple[list[int], list[int]],
                  name: bytes | None) -> tuple[int, int, bool]:
        """Send planned messages; return (datagrams sent, errno or 0, whether GSO itself was refused)."""
        counts, sizes = plan
        msgs = len(counts)
        firsts = [start]
        for c in counts[:-1]:
            firsts.append(firsts[-1] + c)
        iov_bytes = ctypes.sizeof(_Iovec)
        self._g_iov[:msgs] = array("Q", [self._siov_addr + f * iov_bytes for f in firsts])
        self._g_iovlen[:msgs] = array("Q", counts)
        self._g_control[:msgs] = array("Q", [self._ctrl_addr + m * _CMSG_SPACE if c > 1 else 0
                                             for m, c in enumerate(counts)])
        self._g_controllen[:msgs] = array("Q", [_CMSG_SPACE if c > 1 else 0 for c in counts])
        self._g_segment[:msgs] = array("H", sizes)
        if name is None:
            self._g_name[:msgs] = array("Q", [0] * msgs)
            self._g_namelen[:msgs] = array("Q", [0] * msgs)
        else:
            self._g_name[:msgs] = array("Q", [self._dest_addr] * msgs)
            self._g_namelen[:msgs] = array("Q", [len(name)] * msgs)
        done_msgs, err = self._send_loop(fd, self._gmsg_addr, 0, msgs)
        sent = sum(counts[:done_msgs])
        refused = err in _GSO_REFUSED and counts[done_msgs] > 1
        return sent, err, refused

    def _send_loop(self, fd: int, table: int, start: int, count: int) -> tuple[int, int]:
        done = 0
        while done < count:
            r = self._sendmmsg(fd, table + (start + done) * self._msg_bytes, count - done, MSG_DONTWAIT)
            if r <= 0:
                return done, ctypes.get_errno() if r < 0 else errno.EIO
            done += r
        return done, 0


def sockaddr_tuple(name: bytes) -> tuple[str, int]:
    """(host, port) of a raw sockaddr_in / sockaddr_in6, for logs."""
    port = int.from_bytes(name[2:4], "big")
    if len(name) == NAME_LEN[socket.AF_INET]:
        return socket.inet_ntop(socket.AF_INET, name[4:8]), port
    return socket.inet_ntop(socket.AF_INET6, name[8:24]), port


class PortableBatch:
    """DatagramBatch's interface over recvfrom_into / send / sendto: one system call per datagram."""

    def __init__(self, slots: int = 64, slot_bytes: int = SLOT_BYTES) -> None:
        self.slots = slots
        self.slot_bytes = slot_bytes
        self._view = memoryview(bytearray(slots * slot_bytes))
        self._lens = [0] * slots
        self._names: list[object] = [None] * slots

    def recv(self, sock: socket.socket, n: int | None = None) -> int:
        """Read up to n datagrams without blocking; 0 if none; OSError if the first read fails."""
        n = self.slots if n is None else n
        size = self.slot_bytes
        view = self._view
        for i in range(n):
            try:
                self._lens[i], self._names[i] = sock.recvfrom_into(view[i * size:(i + 1) * size], size,
                                                                   MSG_DONTWAIT)
            except BlockingIOError:
                return i
            except OSError:
                if i:
                    return i  # the error stays pending: the next recv reports it
                raise
        return n

    def lengths(self, n: int) -> list[int]:
        return self._lens[:n]

    def names(self, n: int, name_len: int) -> list[object]:
        return self._names[:n]

    def same_source(self, n: int) -> bool:
        first = self._names[0]
        return all(x == first for x in self._names[1:n])

    def name(self, i: int, name_len: int) -> object:
        return self._names[i]

    @staticmethod
    def display(name: object) -> tuple[str, int]:
        return name[0], name[1]  # type: ignore[index]

    def payload(self, i: int, length: int) -> memoryview:
        start = i * self.slot_bytes
        return self._view[start:start + length]

    def send(self, sock: socket.socket, start: int, lengths: list[int]) -> tuple[int, int]:
        return self._send(sock, start, lengths, None)

    def send_to(self, sock: socket.socket, start: int, lengths: list[int], name: object) -> tuple[int, int]:
        return self._send(sock, start, lengths, name)

    def _send(self, sock: socket.socket, start: int, lengths: list[int], name: object) -> tuple[int, int]:
        for k, length in enumerate(lengths):
            data = self.payload(start + k, length)
            try:
                if name is None:
                    sock.send(data, MSG_DONTWAIT)
                else:
                    sock.sendto(data, MSG_DONTWAIT, name)  # type: ignore[call-overload]
            except OSError as e:
                return k, e.errno or errno.EIO
        return len(lengths), 0


def _disabled_by_env(name: str) -> bool:
    return os.environ.get(name, "") not in ("", "0")


def open_batch(slots: int) -> DatagramBatch | PortableBatch:
    """The fastest batch this platform has, less what the environment switches off:
    PORTUNUS_DISABLE_UDP_GSO=1 (sendmmsg, one datagram per message) and
    PORTUNUS_DISABLE_UDP_MMSG=1 (one system call per datagram), for A/B runs and
    as a way out should a driver mishandle GSO."""
    if not AVAILABLE or _disabled_by_env("PORTUNUS_DISABLE_UDP_MMSG"):
        return PortableBatch(slots)
    return DatagramBatch(slots, gso=GSO_AVAILABLE and not _disabled_by_env("PORTUNUS_DISABLE_UDP_GSO"))


def describe(batch: DatagramBatch | PortableBatch) -> str:
    """How a batch moves datagrams, for the log."""
    if isinstance(batch, PortableBatch):
        return f"recvfrom/sendto, up to {batch.slots} datagrams per readiness event"
    return f"recvmmsg/sendmmsg, {batch.slots} datagrams per call, UDP GSO {'on' if batch.gso else 'off'}"
