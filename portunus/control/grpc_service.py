"""The gRPC handlers of portunus-server: Enroll and Session (see `wire`)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
import secrets
from typing import Any

import grpc

from portunus.control import wire
from portunus.control.enrollment import secret_hash
from portunus.control.guard import Guard, peer_address
from portunus.control.hub import Hub
from portunus.control.pki import load_public_key_b64
from portunus.control.signing import SESSION_CONTEXT, verify_bytes

log = logging.getLogger("portunus.server.grpc")

# A client that opened a stream must say hello this fast, or it is dropped.
HELLO_TIMEOUT_S = 10.0
NONCE_BYTES = 32


class ControlService:
    def __init__(self, hub: Hub, guard: Guard) -> None:
        self.hub = hub
        self.guard = guard

    def handler(self) -> grpc.GenericRpcHandler:
        return grpc.method_handlers_generic_handler(wire.SERVICE, {
            "Enroll": grpc.unary_unary_rpc_method_handler(
                self.enroll, request_deserializer=wire.decode, response_serializer=wire.encode),
            "Session": grpc.stream_stream_rpc_method_handler(
                self.session, request_deserializer=wire.decode, response_serializer=wire.encode),
        })

    # ------------------------------------------------------------ enroll

    async def enroll(self, msg: dict[str, Any], context: grpc.aio.ServicerContext) -> dict[str, Any]:
        store, metrics = self.hub.store, self.hub.metrics
        peer = peer_address(context.peer())
        await self._unless_throttled(context, peer, "enrollment")
        try:
            req = wire.EnrollRequest.from_wire(msg)
            load_public_key_b64(req.public_key)
        except ValueError as e:
            metrics.enrollments.labels("invalid").inc()
            self.guard.failed("grpc", peer, "client.enroll", None, "refused: bad enrollment request")
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad enrollment request: {e}")
        client, why = store.consume_enrollment(secret_hash(req.secret), req.public_key)
        if client is None:
            metrics.enrollments.labels("refused").inc()
            metrics.auth_failures.labels("grpc", "enrollment").inc()
            self.guard.failed("grpc", peer, "client.enroll", None, f"refused: {why}")
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, why)
        assert client is not None
        metrics.enrollments.labels("ok").inc()
        store.add_audit(f"client:{client.name}", None, "client.enroll", f"client {client.name}",
                        {"peer": context.peer(), "agent": req.agent}, "ok")
        log.info('client "%s" enrolled from %s', client.name, context.peer())
        return wire.EnrollResponse(client.name, self.hub.keys.signing_public_key_b64).to_wire()

    # ------------------------------------------------------------ session

    async def _unless_throttled(self, context: grpc.aio.ServicerContext, peer: str, what: str) -> None:
        """Abort with RESOURCE_EXHAUSTED if `peer` failed too often lately."""
        wait_s = self.guard.retry_after_s("grpc", peer)
        if wait_s is not None:
            self.hub.metrics.auth_failures.labels("grpc", "throttled").inc()
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"too many failed attempts from {peer}; "
                                f"{what} refused for {math.ceil(wait_s)} s")

    async def _deny(self, context: grpc.aio.ServicerContext, reason: str, message: str) -> None:
        self.hub.metrics.auth_failures.labels("grpc", reason).inc()
        log.warning("session from %s refused: %s", context.peer(), message)
        self.guard.failed("grpc", peer_address(context.peer()), "client.session", None, f"refused: {message}")
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def session(self, request_iterator: Any, context: grpc.aio.ServicerContext) -> None:
        await self._unless_throttled(context, peer_address(context.peer()), "session")
        nonce = base64.b64encode(secrets.token_bytes(NONCE_BYTES)).decode()
        await context.write(wire.challenge(nonce))
        try:
            first = await asyncio.wait_for(context.read(), HELLO_TIMEOUT_S)
        except TimeoutError:
            await self._deny(context, "timeout", f"no hello within {HELLO_TIMEOUT_S:g} s")
            return
        if first is grpc.aio.EOF:
            return
        try:
            hello = wire.parse_client_message(first)
        except wire.WireError as e:
            await self._deny(context, "malformed", f"bad hello: {e}")
            return
        if not isinstance(hello, wire.Hello):
            await self._deny(context, "malformed", "first message must be hello")
            return
        client = self.hub.store.client_by_name(hello.client)
        if client is None or client.public_key is None:
            await self._deny(context, "unknown_client", f'unknown or not enrolled client "{hello.client}"')
            return
        try:
            ok = verify_bytes(load_public_key_b64(client.public_key), wire.session_proof_bytes(nonce, client.name),
                              hello.signature, SESSION_CONTEXT)
        except ValueError:
            ok = False
        if not ok:
            await self._deny(context, "bad_signature", f'client "{client.name}": session proof does not verify')
            return

        session = self.hub.attach(client)
        log.info('client "%s" connected from %s (it runs version %d, server has %d)', client.name,
                 context.peer(), hello.version, client.ruleset_version)
        reader = asyncio.create_task(self._read_loop(session, context))
        try:
            while True:
                get = asyncio.ensure_future(session.queue.get())
                done, _ = await asyncio.wait({get, reader}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    break  # the client went away
                msg = get.result()
                if msg is None:
                    break  # replaced by a newer stream, or server stopping
                await context.write(msg)
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
            self.hub.detach(session)
            log.info('client "%s" disconnected', client.name)

    async def _read_loop(self, session: Any, context: grpc.aio.ServicerContext) -> None:
        while True:
            raw = await context.read()
            if raw is grpc.aio.EOF:
                return
            try:
                msg = wire.parse_client_message(raw)
            except wire.WireError as e:
                log.warning('client "%s": ignoring bad message: %s', session.client, e)
                continue
            if isinstance(msg, wire.Ack):
                self.hub.on_ack(session, msg)
            elif isinstance(msg, wire.Rejected):
                self.hub.on_rejected(session, msg)
            elif isinstance(msg, wire.Resync):
                log.info('client "%s" asks for a re-sync: %s', session.client, msg.reason)
                self.hub.resync(session)
            elif isinstance(msg, wire.Stats):
                self.hub.on_stats(session, msg)
            else:
                log.warning('client "%s": unexpected %s', session.client, type(msg).__name__)

    def close_all(self) -> None:
        for s in list(self.hub.sessions.values()):
            s.queue.put_nowait(None)
