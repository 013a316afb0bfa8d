"""A minimal epoll event loop: one thread, readiness callbacks, timers, cross-thread calls.

Why not asyncio: the data plane's unit of work is tiny (an accept, a 1-byte
exchange, one splice), so the per-event cost of the loop is the cost of the
forwarder. asyncio wraps every readiness event in a Handle, a callback
queue and (for streams) a Future; here an event is one dict lookup and one
call of a bound method, and a connection's sockets are registered once,
edge-triggered, for their whole life (no epoll_ctl per read or write).

Contract for handlers: `add(fd, handler, events)` calls `handler(mask)` on
the loop thread when the fd is ready. Edge-triggered registrations
(EPOLLET) report each readiness change once: the handler must remember the
state (readable / writable) until it sees EAGAIN. `forget(fd)` drops the
handler before the owner closes the fd (closing removes it from epoll).
Everything except `call_soon_threadsafe`, `call_and_wait` and `stop` must be
called on the loop thread.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import os
import select
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger("portunus.loop")

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
EPOLLERR = select.EPOLLERR
EPOLLHUP = select.EPOLLHUP
EPOLLRDHUP = select.EPOLLRDHUP
EPOLLET = select.EPOLLET
# A connection's sockets: every readiness change, once, for their whole life.
EDGE_ALL = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET
# Events returned per epoll_wait; more stay queued in the kernel for the next round.
MAX_EVENTS = 1024
# Longest sleep with nothing scheduled: bounds how late a missed wake-up could be noticed.
MAX_WAIT_S = 1.0


class Timer:
    """A scheduled call; `cancel()` makes it a no-op (it stays in the heap until due)."""

    __slots__ = ("when", "fn", "args", "cancelled")

    def __init__(self, when: float, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.fn = fn
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        self.fn = _noop
        self.args = ()


def _noop(*_args: Any) -> None:
    pass


class EventLoop:
    """Runs on one thread until `stop()`; `now` is the monotonic time of the current round."""

    def __init__(self, name: str = "dataplane") -> None:
        self.name = name
        self._ep = select.epoll()
        self.handlers: dict[int, Callable[[int], None]] = {}
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._soon: deque[Callable[[], None]] = deque()
        self._remote: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._wake_pending = False
        self._ep.register(self._wake_fd, EPOLLIN)
        self._running = False
        self._loop_thread: threading.Thread | None = None
        self.now = time.monotonic()

    # ------------------------------------------------------------ registration

    @property
    def register(self) -> Callable[[int, int], None]:
        """epoll register(fd, events), for hot paths that set `handlers[fd]` themselves."""
        return self._ep.register

    @property
    def modify(self) -> Callable[[int, int], None]:
        """epoll modify(fd, events)."""
        return self._ep.modify

    def add(self, fd: int, handler: Callable[[int], None], events: int = EDGE_ALL) -> None:
        self._ep.register(fd, events)
        self.handlers[fd] = handler

    def set_handler(self, fd: int, handler: Callable[[int], None]) -> None:
        self.handlers[fd] = handler

    def forget(self, fd: int) -> None:
        """Drop fd's handler; the caller closes the fd next (which removes it from epoll)."""
        self.handlers.pop(fd, None)

    def remove(self, fd: int) -> None:
        """Unregister fd from epoll and drop its handler (the fd stays open)."""
        self.handlers.pop(fd, None)
        try:
            self._ep.unregister(fd)
        except (OSError, ValueError):
            pass

    # ------------------------------------------------------------ scheduling

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run fn after the current round's events (loop thread only)."""
        self._soon.append(fn)

    def call_later(self, delay_s: float, fn: Callable[..., Any], *args: Any) -> Timer:
        t = Timer(self.now + delay_s, fn, args)
        heapq.heappush(self._timers, (t.when, next(self._seq), t))
        return t

    def call_soon_threadsafe(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run fn(*args) on the loop thread soon; callable from any thread."""
        self._remote.append((fn, args))
        if not self._wake_pending:
            self._wake_pending = True
            try:
                os.eventfd_write(self._wake_fd, 1)
            except OSError:
                pass

    def call_and_wait(self, fn: Callable[..., Any], *args: Any, timeout_s: float | None = None) -> Any:
        """Run fn(*args) on the loop thread and return its result (or raise its exception)."""
        if threading.current_thread() is self._loop_thread or not self._running:
            return fn(*args)
        done = threading.Event()
        box: list[Any] = [None, None]

        def run() -> None:
            try:
                box[0] = fn(*args)
            except BaseException as e:  # re-raised in the caller's thread
                box[1] = e
            finally:
                done.set()

        self.call_soon_threadsafe(run)
        if not done.wait(timeout_s):
            raise TimeoutError(f"event loop {self.name} did not run the call within {timeout_s} s")
        if box[1] is not None:
            raise box[1]
        return box[0]

    # ------------------------------------------------------------ running

    def start(self) -> None:
        """Run the loop on a new daemon thread."""
        self._running = True
        self._loop_thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._loop_thread.start()

    def stop(self, join_timeout_s: float = 5.0) -> None:
        if not self._running:
            return
        self.call_soon_threadsafe(self._halt)
        if self._loop_thread is not None and self._loop_thread is not threading.current_thread():
            self._loop_thread.join(join_timeout_s)

    def _halt(self) -> None:
        self._running = False

    def close(self) -> None:
        self._ep.close()
        os.close(self._wake_fd)

    def in_loop_thread(self) -> bool:
        return threading.current_thread() is self._loop_thread

    def _run(self) -> None:
        poll = self._ep.poll
        handlers = self.handlers
        soon = self._soon
        timers = self._timers
        wake_fd = self._wake_fd
        monotonic = time.monotonic
        while self._running:
            if soon or self._remote:
                timeout = 0.0
            elif timers:
                timeout = min(max(0.0, timers[0][0] - monotonic()), MAX_WAIT_S)
            else:
                timeout = MAX_WAIT_S
            try:
                events = poll(timeout, MAX_EVENTS)
            except InterruptedError:
                events = []
            self.now = monotonic()
            for fd, mask in events:
                handler = handlers.get(fd)
                if handler is not None:
                    try:
                        handler(mask)
                    except Exception:
                        log.exception("event handler for fd %d failed", fd)
                elif fd == wake_fd:
                    try:  # consume first, then re-arm: a wake-up written after this is not lost
                        os.eventfd_read(wake_fd)
                    except OSError:
                        pass
                    self._wake_pending = False
            remote = self._remote
            while remote:
                fn, args = remote.popleft()
                try:
                    fn(*args)
                except Exception:
                    log.exception("loop call failed")
            n = len(soon)
            while n:
                n -= 1
                try:
                    soon.popleft()()
                except Exception:
                    log.exception("deferred call failed")
            if timers and timers[0][0] <= self.now:
                now = self.now
                while timers and timers[0][0] <= now:
                    t = heapq.heappop(timers)[2]
                    if not t.cancelled:
                        try:
                            t.fn(*t.args)
                        except Exception:
                            log.exception("timer call failed")
