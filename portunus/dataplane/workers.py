"""Reusable pump threads and splice pipes.

A new thread per connection direction costs a stack mmap/munmap (and, in a
multi-threaded process, the TLB-shootdown IPIs that munmap triggers on every
CPU) plus a start handshake; a new pipe costs pipe2 + F_SETPIPE_SZ. Measured
with `perf` on a connection-rate run, that churn was most of the forwarder's
kernel time per connection. Threads and empty pipes are therefore kept and
reused; both pools shrink when idle.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from portunus.dataplane.pumps import open_pipe

log = logging.getLogger("portunus.workers")

# A worker with nothing to do for this long exits; bursts of connections
# reuse warm threads, a quiet forwarder gives its threads back.
WORKER_IDLE_EXIT_S = 10.0
# Idle workers beyond this many exit at once instead of waiting.
MAX_IDLE_WORKERS = 256
# Empty splice pipes kept for reuse (two fds each).
MAX_POOLED_PIPES = 512


class WorkerPool:
    """Runs submitted calls on reusable daemon threads, one call per thread at a time.

    Never queues work behind a busy thread: a call either goes to a waiting
    worker or gets a new one, because pump calls block for the lifetime of a
    connection.
    """

    def __init__(self, name: str = "worker", idle_exit_s: float = WORKER_IDLE_EXIT_S,
                 max_idle: int = MAX_IDLE_WORKERS) -> None:
        self._name = name
        self._idle_exit_s = idle_exit_s
        self._max_idle = max_idle
        self._queue: queue.SimpleQueue[tuple[Callable[..., Any], tuple]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        # Workers blocked on the queue minus calls already promised to them.
        self._idle = 0

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run fn(*args) on a worker; raises RuntimeError if no thread can be started."""
        with self._lock:
            if self._idle > 0:
                self._idle -= 1
                self._queue.put((fn, args))
                return
        threading.Thread(target=self._work, args=(fn, args), name=self._name, daemon=True).start()

    def _work(self, fn: Callable[..., Any], args: tuple) -> None:
        get = self._queue.get
        while True:
            try:
                fn(*args)
            except Exception:
                log.exception("worker call failed")
            fn = args = None  # type: ignore[assignment]  # drop references while idle
            with self._lock:
                if self._idle >= self._max_idle:
                    return
                self._idle += 1
            try:
                fn, args = get(timeout=self._idle_exit_s)
            except queue.Empty:
                with self._lock:
                    if self._idle > 0:  # no call is promised to us: leave
                        self._idle -= 1
                        return
                fn, args = get()  # a call was promised to a waiting worker: take it

    def idle_workers(self) -> int:
        with self._lock:
            return self._idle


class PipePool:
    """Empty splice pipes for reuse. Only a pipe known to be empty may be returned."""

    def __init__(self, max_pipes: int = MAX_POOLED_PIPES) -> None:
        self._pipes: deque[tuple[int, int, int]] = deque()  # append/pop are atomic
        self._max = max_pipes

    def get(self) -> tuple[int, int, int]:
        try:
            return self._pipes.pop()
        except IndexError:
            return open_pipe()

    def put(self, pipe: tuple[int, int, int]) -> None:
        if len(self._pipes) < self._max:
            self._pipes.append(pipe)
        else:
            self.discard(pipe)

    @staticmethod
    def discard(pipe: tuple[int, int, int]) -> None:
        os.close(pipe[0])
        os.close(pipe[1])

    def close(self) -> None:
        while self._pipes:
            self.discard(self._pipes.pop())
