"""The portunus-server process: state, keys, gRPC listener, operator API, metrics.

`serve_server` runs until SIGINT/SIGTERM. Exit codes: 0 after a signal,
1 a listener cannot bind or the data dir is in use by another server,
2 bad server.toml or an unusable (tmpfs) data dir.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web

from portunus.control import wire
from portunus.control.grpc_service import ControlService
from portunus.control.guard import Guard
from portunus.control.hub import Hub
from portunus.control.operator_api import OperatorApi
from portunus.control.pki import load_or_create_keys
from portunus.control.server_metrics import ServerMetrics
from portunus.control.settings import ServerSettings
from portunus.control.store import DataDirLocked, Store, StoreError, open_store
from portunus.quota import TICK_S as QUOTA_TICK_S
from portunus.runtime import freeze_startup_objects, parse_host_port, serve_metrics

log = logging.getLogger("portunus.server")

# Streams get this long to finish their last write at shutdown.
GRPC_STOP_GRACE_S = 1.0


class StartupError(Exception):
    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _hosts(settings: ServerSettings) -> list[str]:
    hosts = []
    for addr in (settings.control_listen, settings.endpoint):
        host, _ = parse_host_port(addr)
        if host not in hosts and host not in ("0.0.0.0", "::"):
            hosts.append(host)
    return hosts


def open_state(data_dir: Path) -> Store:
    try:
        return open_store(data_dir)
    except DataDirLocked as e:
        raise StartupError(str(e), 1) from None
    except StoreError as e:
        raise StartupError(str(e), 2) from None


async def serve_server(data_dir: Path, settings: ServerSettings) -> int:
    """Run until SIGINT/SIGTERM; raise StartupError if something cannot start."""
    store = open_state(data_dir)
    http_runner: web.AppRunner | None = None
    grpc_server: grpc.aio.Server | None = None
    metrics_http: Any = None
    hub: Hub | None = None
    try:
        keys = load_or_create_keys(data_dir, _hosts(settings))
        metrics = ServerMetrics(lambda: hub.reports() if hub else {}, lambda: hub.quota_metrics if hub else {})
        hub = Hub(store, keys, metrics)
        guard = Guard(store, metrics)
        service = ControlService(hub, guard)

        grpc_server = grpc.aio.server(options=wire.SERVER_OPTIONS)
        grpc_server.add_generic_rpc_handlers((service.handler(),))
        creds = grpc.ssl_server_credentials([(keys.key_pem, keys.cert_pem)])
        try:
            port = grpc_server.add_secure_port(settings.control_listen, creds)
        except RuntimeError as e:
            port = 0
            log.debug("add_secure_port: %s", e)
        if port == 0:
            raise StartupError(f"control_listen {settings.control_listen}: cannot listen (address in use "
                               "or not local)", 1)
        await grpc_server.start()

        api = OperatorApi(hub, settings, keys.fingerprint, guard)
        http_runner = web.AppRunner(api.app(), access_log=None, handle_signals=False)
        await http_runner.setup()
        host, hport = parse_host_port(settings.operator_http_listen)
        try:
            await web.TCPSite(http_runner, host, hport, reuse_address=True).start()
        except OSError as e:
            raise StartupError(f"operator_http_listen {settings.operator_http_listen}: {e.strerror or e}", 1) from None

        if settings.metrics_listen:
            try:
                metrics_http = serve_metrics(settings.metrics_listen, metrics.registry,
                                             lambda: {"clients": hub.reports() if hub else {}})
            except OSError as e:
                raise StartupError(f"metrics_listen {settings.metrics_listen}: {e.strerror or e}", 1) from None

        stop = asyncio.Event()
        quota_clock = asyncio.create_task(_tick_quotas(hub, stop))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: log.info("SIGHUP ignored (restart to re-read server.toml)"))
        freeze_startup_objects()
        log.info("portunus-server ready: control %s (TLS, fingerprint sha256:%s), operator API http://%s%s, "
                 "state %s (schema %d)", settings.control_listen, keys.fingerprint, settings.operator_http_listen,
                 f", metrics http://{settings.metrics_listen}/metrics" if settings.metrics_listen else "",
                 store.data_dir / "state.db", store.schema_version)
        await stop.wait()
        await quota_clock
        log.info("stopping")
        service.close_all()
        return 0
    finally:
        if http_runner is not None:
            await http_runner.cleanup()
        if grpc_server is not None:
            await grpc_server.stop(GRPC_STOP_GRACE_S)
        if metrics_http is not None:
            metrics_http.shutdown()
        if hub is not None:
            hub.flush_seen()  # the streams closed above were the last sightings
        store.close()


async def _tick_quotas(hub: Hub, stop: asyncio.Event) -> None:
    """Roll quota periods on time (a new period is pushed to its client)."""
    while not stop.is_set():
        try:
            hub.tick_quotas()
        except Exception:  # the ledger's clock must never take the server down
            log.exception("quota tick failed")
        try:
            await asyncio.wait_for(stop.wait(), QUOTA_TICK_S)
        except TimeoutError:
            pass


def run_server(data_dir: Path, settings: ServerSettings) -> int:
    try:
        return asyncio.run(serve_server(data_dir, settings))
    except StartupError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
