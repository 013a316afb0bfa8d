"""The /metrics, /stats and /healthz endpoint: HTTP/1.0 on one thread with its own event loop.

http.server gave every connection a thread and no timeout, behind a listen
backlog of 5: a few hundred idle sockets meant a few hundred threads, held
forever. Here an open socket costs a file descriptor and a few objects; a
request must arrive whole within `REQUEST_TIMEOUT_S`; at most
`MAX_CONNECTIONS` are open, and a new connection past that closes the one
that has waited longest for its request, so a flood of idle sockets cannot
keep a scrape out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry

log = logging.getLogger("portunus.metrics_http")

# Listen backlog: room for a burst of scrapers and dashboards connecting at once
# (socketserver's default, 5, drops connections under any burst).
BACKLOG = 128
# A scrape sends its request at once; a socket silent (or trickling) this long is closed.
REQUEST_TIMEOUT_S = 5.0
# Open connections at once: far above the scrapers any exporter serves.
MAX_CONNECTIONS = 256
# A scrape's request is one line and a few headers.
MAX_REQUEST_BYTES = 16 * 1024
# At shutdown, a response being written gets this long to finish.
SHUTDOWN_GRACE_S = 1.0

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


class MetricsServer:
    """Serves the endpoint on `sock` in a daemon thread until `shutdown`."""

    def __init__(self, sock: socket.socket, registry: CollectorRegistry,
                 stats: Callable[[], dict[str, Any]]) -> None:
        self.registry = registry
        self.stats = stats
        self._sock = sock
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        # Connections still waiting for their request, oldest first (the ones evicted at the cap).
        self._waiting: dict[asyncio.StreamWriter, None] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._open = 0
        self._thread = threading.Thread(target=self._run, name="metrics", daemon=True)
        self._thread.start()
        self._ready.wait()

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, sock=self._sock, limit=MAX_REQUEST_BYTES, backlog=BACKLOG)
        self._ready.set()
        async with server:
            await self._stop.wait()
            for writer in list(self._waiting):  # idle ones would hold up the close
                writer.transport.abort()
            if self._tasks:
                _, pending = await asyncio.wait(self._tasks, timeout=SHUTDOWN_GRACE_S)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)

    def shutdown(self) -> None:
        """Stop serving and close the listener (returns once the thread is done)."""
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._open >= MAX_CONNECTIONS and self._waiting:
            oldest = next(iter(self._waiting))
            del self._waiting[oldest]
            oldest.transport.abort()
        self._open += 1
        self._waiting[writer] = None
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_S)
            finally:
                self._waiting.pop(writer, None)
            status, ctype, body = self._respond(head)
            writer.write(f"HTTP/1.0 {status} {_REASONS[status]}\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body)
            await asyncio.wait_for(writer.drain(), REQUEST_TIMEOUT_S)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError):
            pass  # a scraper that went away or never spoke: nothing to answer
        except Exception:
            log.exception("metrics request failed")
        finally:
            self._open -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _respond(self, head: bytes) -> tuple[int, str, bytes]:
        parts = head.split(b"\r\n", 1)[0].split()
        if len(parts) != 3:
            return 400, "text/plain", b"bad request line\n"
        method, target = parts[0], parts[1].decode("latin-1")
        path = target.split("?", 1)[0]
        if method != b"GET":
            return 405, "text/plain", b"only GET\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self.registry)
        if path in ("/stats", "/stats.json"):
            return 200, "application/json", json.dumps(self.stats(), indent=2, sort_keys=True).encode()
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        return 404, "text/plain", b"try /metrics, /stats or /healthz\n"


def open_listener(host: str, port: int) -> socket.socket:
    """A listening TCP socket with the metrics backlog (OSError if it cannot bind)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=BACKLOG)
