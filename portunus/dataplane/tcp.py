"""TCP connections: dial the target, then pump both directions until done.

One thread per direction on blocking sockets (the accepting thread hands
each connection to its own thread, which dials and runs client -> target;
a second thread runs target -> client). A blocked splice or recv holds no
GIL, so an idle or waiting connection costs no CPU; the alternatives (one
selectors loop, asyncio add_reader/add_writer) are measured side by side by
benchmarks/concurrency_models.py, with the committed results under
results/concurrency-models/.

Semantics kept on both pump paths: EOF one way becomes shutdown(SHUT_WR) the
other way while the other way keeps flowing; a reset or error tears down both
sides (with RST, via SO_LINGER 0); sockets are closed only after both pumps
have returned, so no thread ever touches a reused fd.
"""

from __future__ import annotations

import _thread
import logging
import socket
import struct
from collections.abc import Sequence

from portunus.dataplane.proxy_protocol import build_header
from portunus.dataplane.pumps import Counter, Throttle, copy_pump, splice_pump
from portunus.dataplane.workers import PipePool, WorkerPool

log = logging.getLogger("portunus.tcp")

_LINGER_RESET = struct.pack("ii", 1, 0)  # l_onoff=1, l_linger=0: close() sends RST


def tune_socket(sock: socket.socket) -> None:
    """Blocking mode for the pumps; no Nagle delay on small request/response traffic."""
    sock.setblocking(True)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except OSError:
        pass


class DialError(Exception):
    """No target accepted the connection; `attempts` says why for each."""

    def __init__(self, attempts: list[str]):
        self.attempts = attempts
        super().__init__("; ".join(attempts))


def dial(targets: Sequence[tuple[str, int, str | None]], timeout_s: float
         ) -> tuple[socket.socket, str | None, int]:
    """Connect to the first target that accepts, in order (DNS resolved now).

    Returns (socket, proxy_protocol, failed_attempts_before_success).
    """
    attempts: list[str] = []
    for host, port, proxy in targets:
        try:
            sock = socket.create_connection((host, port), timeout=timeout_s)
        except OSError as e:
            reason = e.strerror or type(e).__name__
            if isinstance(e, socket.gaierror):
                reason = f"cannot resolve: {reason}"
            elif isinstance(e, TimeoutError):
                reason = f"connect timed out after {timeout_s:g} s"
            attempts.append(f"{host}:{port}: {reason}")
            continue
        tune_socket(sock)
        return sock, proxy, len(attempts)
    raise DialError(attempts)


class TcpConnection:
    """Both directions of one forwarded connection."""

    __slots__ = ("client", "upstream", "counter_in", "counter_out", "_aborted", "__weakref__")

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client = client
        self.upstream = upstream
        self.counter_in = Counter()   # client -> target
        self.counter_out = Counter()  # target -> client
        self._aborted = False

    def bytes_moved(self) -> tuple[int, int]:
        return self.counter_in.bytes, self.counter_out.bytes

    def abort(self) -> None:
        """Tear down both sides at once (peer reset, drain deadline); wakes both pumps."""
        self._aborted = True
        for s in (self.client, self.upstream):
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            except OSError:
                pass
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def run_direction(self, src: socket.socket, dst: socket.socket, counter: Counter,
                      pipes: PipePool | None, throttles: Sequence[Throttle]) -> None:
        """Pump one direction (splice when `pipes` is given) and pass its end on."""
        try:
            if pipes is not None:
                pipe = pipes.get()
                try:
                    splice_pump(src.fileno(), dst.fileno(), counter, pipe)
                except BaseException:
                    pipes.discard(pipe)  # may still hold bytes: never reuse
                    raise
                pipes.put(pipe)
            else:
                copy_pump(src, dst, counter, throttles)
        except OSError as e:
            if not self._aborted:
                log.debug("connection reset: %s", e)
                self.abort()
            return
        # Clean EOF: pass the half-close on; the other direction keeps going.
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def run(self, workers: WorkerPool, pipes: PipePool | None, throttles_in: Sequence[Throttle],
            throttles_out: Sequence[Throttle]) -> None:
        """Pump both directions (this thread: in; a pool worker: out) until both end."""
        out_done = _thread.allocate_lock()
        out_done.acquire()

        def run_out() -> None:
            try:
                self.run_direction(self.upstream, self.client, self.counter_out, pipes, throttles_out)
            finally:
                out_done.release()

        try:
            workers.submit(run_out)
        except RuntimeError:  # no thread to be had: give the connection up cleanly
            self.abort()
            return
        self.run_direction(self.client, self.upstream, self.counter_in, pipes, throttles_in)
        out_done.acquire()

    def close(self) -> None:
        for s in (self.client, self.upstream):
            try:
                s.close()
            except OSError:
                pass


def send_proxy_header(upstream: socket.socket, version: str, client: socket.socket) -> None:
    src = client.getpeername()
    dst = client.getsockname()
    upstream.sendall(build_header(version, src, dst))
