"""The least a CPython epoll forwarder can do per connection: the floor for portunus's loop.

    python benchmarks/alternatives/min_epoll.py LISTEN_PORT TARGET_PORT [raw]

No limits, stats, failover, timeouts, splice or error handling beyond what keeps it
running: only accept, non-blocking connect, edge-triggered copy both ways, half-close.
Used by benchmarks/connrate_alternatives.py; never a forwarder to deploy.
"""

import select
import socket
import sys
from _socket import socket as RawSock

LP, TP = int(sys.argv[1]), int(sys.argv[2])
RAW = len(sys.argv) > 3 and sys.argv[3] == "raw"
Sock = RawSock if RAW else socket.socket
ep = select.epoll()
ET = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | select.EPOLLET
lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
lsock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
lsock.bind(("127.0.0.1", LP))
lsock.listen(4096)
handlers = {}
buf = memoryview(bytearray(65536))
DW = socket.MSG_DONTWAIT
TARGET = ("127.0.0.1", TP)


class Conn:
    __slots__ = (
        "c",
        "u",
        "cfd",
        "ufd",
        "connected",
        "c_r",
        "u_r",
        "c_done",
        "u_done",
        "c_rdhup",
        "u_rdhup",
    )

    def __init__(self, c, cfd):
        self.c = c
        self.cfd = cfd
        u = Sock(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        u.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        u.connect_ex(TARGET)
        self.u = u
        self.ufd = u.fileno()
        self.connected = False
        self.c_r = self.u_r = False
        self.c_done = self.u_done = False
        self.c_rdhup = self.u_rdhup = False
        ep.register(cfd, ET)
        handlers[cfd] = self.on_c
        ep.register(self.ufd, ET)
        handlers[self.ufd] = self.on_u

    def pump(self, src, dst, rdhup):
        # returns: 0 drained, 1 eof, -1 error
        while True:
            try:
                n = src.recv_into(buf, 65536, DW)
            except BlockingIOError:
                return 0
            if n == 0:
                return 1
            try:
                dst.send(buf[:n], DW)
            except OSError:
                return 1
            if n < 65536 and not rdhup:
                return 0

    def on_c(self, mask):
        if mask & (select.EPOLLIN | select.EPOLLRDHUP):
            self.c_r = True
            if mask & select.EPOLLRDHUP:
                self.c_rdhup = True
        if self.connected and self.c_r and not self.c_done:
            r = self.pump(self.c, self.u, self.c_rdhup)
            if r == 0:
                self.c_r = False
            elif r == 1:
                self.c_done = True
                self.eof(self.u, self.u_done)

    def on_u(self, mask):
        if not self.connected:
            if mask & select.EPOLLOUT:
                self.connected = True
                if self.c_r:
                    self.on_c(0)
            else:
                return
        if mask & (select.EPOLLIN | select.EPOLLRDHUP):
            self.u_r = True
            if mask & select.EPOLLRDHUP:
                self.u_rdhup = True
        if self.u_r and not self.u_done:
            r = self.pump(self.u, self.c, self.u_rdhup)
            if r == 0:
                self.u_r = False
            elif r == 1:
                self.u_done = True
                self.eof(self.c, self.c_done)

    def eof(self, dst, other_done):
        if other_done:
            handlers.pop(self.cfd)
            handlers.pop(self.ufd)
            self.c.close()
            self.u.close()
        else:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass


def on_listen(mask):
    for _ in range(64):
        try:
            fd, addr = lsock._accept()
        except BlockingIOError:
            return
        Conn(Sock(socket.AF_INET, socket.SOCK_STREAM, 0, fd), fd)


ep.register(lsock.fileno(), select.EPOLLIN)
handlers[lsock.fileno()] = on_listen
poll = ep.poll
while True:
    for fd, mask in poll(1.0, 1024):
        try:
            handlers[fd](mask)
        except (OSError, KeyError) as e:
            print("ERR", repr(e), file=sys.stderr, flush=True)
