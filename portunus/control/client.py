"""The portunus-client runtime: enrollment, and the control stream that drives
the data plane.

The client holds one bidirectional stream to the server, on one gRPC channel
that lives as long as the process: every attempt opens its stream on that
channel, so at most one control connection exists at a time and no socket
outlives the attempt that dialed it. On connect it gets the full rule set,
then deltas; each one is verified (Ed25519 signature from the server key
pinned at enrollment, version order) before it touches the `Forwarder`, the
same data plane `portunus-standalone` runs. A refused set changes nothing.

When the stream breaks, forwarding goes on untouched and the client tries
again with exponential backoff and full jitter. Meanwhile the channel keeps
dialing on its own short backoff (`wire.CLIENT_CHANNEL_OPTIONS`, at most ~2 s
apart); the moment a dial succeeds the server is back, and the client opens
its stream within `recovery_jitter_s` (uniform) instead of sleeping out a
backoff that grew through the outage. On return the server sends the full
set and the client converges to it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import hashlib
import logging
import random
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import Counter, Gauge
from prometheus_client.registry import CollectorRegistry

from portunus.control import wire
from portunus.control.bundle import ClientBundle
from portunus.control.enrollment import EnrollmentUriError, parse_enrollment_uri
from portunus.control.lastknown import LastKnown
from portunus.control.pki import TLS_NAME, private_key_pem, public_key_b64
from portunus.control.ruleset import BundleRejected, NeedResync, RuleBook
from portunus.control.signing import SESSION_CONTEXT, SignatureError, sign_bytes, verify_document
from portunus.dataplane import Forwarder
from portunus.metrics import PREFIX, SnapshotCollector
from portunus.quota import TICK_S as QUOTA_TICK_S
from portunus.quota import QuotaKeeper
from portunus.runtime import parse_host_port

log = logging.getLogger("portunus.client")

AGENT = "portunus-client/0.1"
# Dialing and the TLS handshake; a server further away than this is down for us.
CONNECT_TIMEOUT_S = 10.0
DEFAULT_STATS_INTERVAL_S = 5.0
# First retry after ~0.5 s, doubling to a ceiling: a restarted server is found
# within a second or two, a long outage costs one dial per RECONNECT_MAX_S.
RECONNECT_BASE_S = 0.5
DEFAULT_RECONNECT_MAX_S = 30.0
# Once the channel reaches the server again, the stream opens after a uniform
# delay in [0, this]: short enough that a fleet is back within seconds of a
# restart, long enough to spread its sessions over the server's first second.
DEFAULT_RECOVERY_JITTER_S = 1.0
# The full set that compacts the last-known file is asked for once no rule set
# arrived for this long (see lastknown.MAX_DELTAS).
COMPACT_IDLE_S = 1.0


class EnrollError(Exception):
    """Enrollment refused or impossible; the message says why and what to do."""


# ------------------------------------------------------------------ enrollment


def fetch_server_cert(endpoint: str, timeout_s: float = CONNECT_TIMEOUT_S) -> bytes:
    """The DER certificate the server at `endpoint` presents (not verified: the caller pins it)."""
    host, port = parse_host_port(endpoint, "endpoint")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])  # gRPC servers expect HTTP/2 negotiation
    with socket.create_connection((host, port), timeout=timeout_s) as raw, \
            ctx.wrap_socket(raw, server_hostname=TLS_NAME) as tls:
        der = tls.getpeercert(binary_form=True)
    if not der:
        raise EnrollError(f"{endpoint}: server presented no certificate")
    return der


def _der_to_pem(der: bytes) -> str:
    return ssl.DER_cert_to_PEM_cert(der)


def enroll(uri_text: str, *, timeout_s: float = CONNECT_TIMEOUT_S) -> ClientBundle:
    """Pin the server certificate from the URI, redeem the one-time secret, return the identity."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        uri = parse_enrollment_uri(uri_text)
    except EnrollmentUriError as e:
        raise EnrollError(str(e)) from None
    try:
        der = fetch_server_cert(uri.endpoint, timeout_s)
    except (OSError, ValueError) as e:
        raise EnrollError(f"cannot reach the server at {uri.endpoint}: {e}") from None
    actual = hashlib.sha256(der).hexdigest()
    if actual != uri.fingerprint:
        raise EnrollError(f"server certificate fingerprint mismatch at {uri.endpoint}: the URI pins sha256:"
                          f"{uri.fingerprint} but the server presents sha256:{actual}; refusing to enroll "
                          "(wrong server, a regenerated certificate, or someone in the middle)")
    cert_pem = _der_to_pem(der)
    key = Ed25519PrivateKey.generate()
    req = wire.EnrollRequest(uri.secret, public_key_b64(key.public_key()), AGENT)
    creds = grpc.ssl_channel_credentials(root_certificates=cert_pem.encode())
    options = (*wire.CLIENT_CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", TLS_NAME))
    with grpc.secure_channel(uri.endpoint, creds, options=options) as channel:
        call = channel.unary_unary(wire.ENROLL_METHOD, request_serializer=wire.encode,
                                   response_deserializer=wire.decode)
        try:
            resp = wire.EnrollResponse.from_wire(call(req.to_wire(), timeout=timeout_s))
        except grpc.RpcError as e:
            code = e.code() if hasattr(e, "code") else None
            details = e.details() if hasattr(e, "details") else str(e)
            raise EnrollError(f"server refused enrollment: {details}"
                              + (f" ({code.name})" if code is not None else "")) from None
        except wire.WireError as e:
            raise EnrollError(f"bad enrollment response: {e}") from None
    return ClientBundle(
        client=resp.client, endpoint=uri.endpoint, server_fingerprint=f"sha256:{actual}",
        server_cert_pem=cert_pem, signing_public_key=resp.signing_public_key,
        client_private_key_pem=private_key_pem(key),
        enrolled_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))


# ------------------------------------------------------------------ runtime


def backoff_delay_s(attempt: int, base_s: float, cap_s: float, rng: random.Random) -> float:
    """Full-jitter exponential backoff: uniform in [0, min(cap, base * 2**attempt)]."""
    return rng.uniform(0.0, min(cap_s, base_s * (2 ** min(attempt, 30))))


class SessionEnded(Exception):
    pass


@dataclass(frozen=True)
class ClientOptions:
    stats_interval_s: float = DEFAULT_STATS_INTERVAL_S
    reconnect_base_s: float = RECONNECT_BASE_S
    reconnect_max_s: float = DEFAULT_RECONNECT_MAX_S
    recovery_jitter_s: float = DEFAULT_RECOVERY_JITTER_S
    # Extra gRPC channel arguments (a process running many clients gives each its own connection).
    channel_options: tuple[tuple[str, Any], ...] = ()


def open_control_channel(bundle: ClientBundle, extra_options: tuple[tuple[str, Any], ...] = ()) -> Any:
    """The client's one gRPC channel to its server (TLS pinned to the enrolled certificate)."""
    creds = grpc.ssl_channel_credentials(root_certificates=bundle.server_cert_pem.encode())
    options = (*wire.CLIENT_CHANNEL_OPTIONS, ("grpc.ssl_target_name_override", TLS_NAME), *extra_options)
    return grpc.aio.secure_channel(bundle.endpoint, creds, options=options)


class ClientMetrics:
    def __init__(self, snapshot: Any) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        r.register(SnapshotCollector(snapshot))
        self.connected = Gauge(f"{PREFIX}_client_connected", "1 while the control stream is up", registry=r)
        self.version = Gauge(f"{PREFIX}_client_ruleset_version", "Version of the running rule set", registry=r)
        self.sessions = Counter(f"{PREFIX}_client_sessions", "Control streams established", registry=r)
        self.recoveries = Counter(f"{PREFIX}_client_fast_reconnects",
                                  "Reconnect waits cut short because the channel reached the server again",
                                  registry=r)
        self.applied = Counter(f"{PREFIX}_client_rulesets_applied", "Rule sets verified and applied", registry=r)
        self.rejected = Counter(f"{PREFIX}_client_rulesets_rejected",
                                "Rule sets refused (bad signature, stale version, invalid rule)", registry=r)


class ControlClient:
    """Runs the control stream for one Forwarder until `stop` is set."""

    def __init__(self, bundle: ClientBundle, fwd: Forwarder, options: ClientOptions,
                 apply_executor: concurrent.futures.Executor | None = None,
                 last_known: LastKnown | None = None, quota_keeper: QuotaKeeper | None = None) -> None:
        self.bundle = bundle
        self.fwd = fwd
        self.options = options
        self.book = RuleBook(bundle.client)
        self.last_known = last_known
        self.restored_rules = 0
        self._full_set_asked = False
        self._rulesets_seen = 0
        self._compact_task: asyncio.Task[None] | None = None
        self._signing_key = bundle.signing_key()
        self._client_key = bundle.client_key()
        self._executor = apply_executor
        self._last_results: dict[str, str | None] = {}  # rule name -> None (running) or why it failed
        self._failed: dict[str, str] = {}  # the failed ones of _last_results
        self._plane_in_doubt = False  # an apply raised: the data plane may not run the book
        self._write_lock = asyncio.Lock()
        self._rng = random.Random()
        # Counts the bytes of the server's quotas here (the client enforces; the server keeps the ledger).
        self.quotas = quota_keeper if quota_keeper is not None else QuotaKeeper(fwd, None)
        self.metrics = ClientMetrics(self.snapshot)
        self.connected = False
        self.rejections = 0
        self.last_rejection: str | None = None
        self.sessions = 0
        self._channel: Any = None
        self._channel_up = asyncio.Event()  # set on each transition of the channel into READY during an attempt

    def _set_results(self, results: dict[str, str | None], applied: dict[str, str | None] | None = None,
                     removed: Sequence[str] = (), whole: bool = True) -> None:
        """Record what the data plane runs; `applied`/`removed`: only these names changed (unless `whole`)."""
        if whole or applied is None:
            self._failed = {n: r for n, r in results.items() if r is not None}
        else:
            for name in removed:
                self._failed.pop(name, None)
            for name, reason in applied.items():
                if reason is None:
                    self._failed.pop(name, None)
                else:
                    self._failed[name] = reason
        self._last_results = results

    def status(self) -> dict[str, Any]:
        return {"client": self.bundle.client, "server": self.bundle.endpoint, "connected": self.connected,
                "ruleset_version": self.book.version, "rules": len(self.book.rules), "sessions": self.sessions,
                "rulesets_rejected": self.rejections, "last_rejection": self.last_rejection,
                "restored_rules": self.restored_rules}

    def restore(self) -> None:
        """Run the last-known rule set from disk (verified) before the server is reached."""
        if self.last_known is None:
            return
        t0 = time.monotonic()
        restored = self.last_known.restore()
        self.book = restored.book
        self.metrics.version.set(self.book.version)
        if not restored.book.rules:
            if restored.high_water:
                log.info("no usable last-known rules; accepting rule sets from version %d on", restored.high_water)
            return
        rules, owners = list(self.book.rules.values()), self.book.data_plane_owners()
        try:
            self._set_results(self.fwd.apply(rules, owners, atomic=False))
            self._sync_quotas(self.book)
        except Exception:  # start as if there were no file, at the same version floor
            log.exception("applying the last-known rule set from %s failed", self.last_known.path)
            self.book = RuleBook(self.bundle.client, restored.high_water)
            self._plane_in_doubt = True
            return
        self.restored_rules = len(rules)
        failed = self._failed
        log.info("restored %d rule(s) at version %d from %s in %.1f ms (verified; used until the server "
                 "answers), %d failed%s", len(rules), self.book.version, self.last_known.path,
                 (time.monotonic() - t0) * 1000, len(failed),
                 "".join(f'; rule "{n}": {r}' for n, r in sorted(failed.items())[:5]))

    def snapshot(self) -> dict[str, Any]:
        """The forwarder's counters, and the quotas' usage when there are quotas."""
        snap = self.fwd.snapshot()
        if self.quotas.specs:
            snap["quotas"] = self.quotas.status()
        return snap

    def stats(self) -> dict[str, Any]:
        return {**self.snapshot(), "control": self.status()}

    def _sync_quotas(self, book: RuleBook) -> None:
        """After an apply: the quotas the book holds, their counts merged with the ledger's (max)."""
        self.quotas.configure({owner: q.spec for owner, q in book.quotas.items()})
        for owner, q in book.quotas.items():
            self.quotas.merge(owner, q.period_start, q.used_bytes)
        self.quotas.tick()

    def quota_usage(self) -> dict[str, dict[str, Any]]:
        """{owner: period_start, used_bytes} for the stats report."""
        status = dict(self.quotas.usage)
        return {o: {"period_start": u.period_start, "used_bytes": u.used_bytes}
                for o, u in status.items() if o in self.quotas.specs}

    async def run(self, stop: asyncio.Event) -> None:
        self._channel = open_control_channel(self.bundle, self.options.channel_options)
        watcher = asyncio.create_task(self._watch_channel(self._channel))
        ticker = asyncio.create_task(self._quota_loop(stop))
        try:
            await self._run(stop)
        finally:
            for task in (watcher, ticker):
                task.cancel()
                with _suppress_all():
                    await task
            with _suppress_all():
                await self._channel.close()

    async def _quota_loop(self, stop: asyncio.Event) -> None:
        """Tick the quota keeper (periods, exhaustion, the usage file) off the event loop."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            if self.quotas.specs:
                try:
                    await loop.run_in_executor(self._executor, self.quotas.tick)
                except Exception:
                    log.exception("quota tick failed")
            try:
                await asyncio.wait_for(stop.wait(), QUOTA_TICK_S)
            except TimeoutError:
                pass

    async def _run(self, stop: asyncio.Event) -> None:
        attempt = 0
        while not stop.is_set():
            sessions_before = self.sessions
            # A dial that succeeds from here on (even before the attempt fails) means the server is back.
            self._channel_up.clear()
            session = asyncio.create_task(self._session())
            stopper = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait({session, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if stopper in done:
                session.cancel()
                with _suppress_all():
                    await session
                return
            stopper.cancel()
            try:
                session.result()
                why = "server closed the stream"
            except grpc.aio.AioRpcError as e:
                why = f"{e.code().name}: {e.details()}"
            except (SessionEnded, wire.WireError, TimeoutError, OSError, ValueError) as e:
                why = str(e) or type(e).__name__
            except Exception as e:  # a bug must cost a reconnect, never the process and its listeners
                log.exception("control stream failed unexpectedly")
                why = f"{type(e).__name__}: {e}"
            if self.sessions > sessions_before:
                attempt = 0  # we had a working stream: start the backoff afresh
            delay = backoff_delay_s(attempt, self.options.reconnect_base_s, self.options.reconnect_max_s, self._rng)
            attempt += 1
            log.warning("control stream to %s down (%s); forwarding continues with %d rule(s); "
                        "retrying in %.2f s", self.bundle.endpoint, why, len(self.book.rules), delay)
            if await self._pause(delay, stop):
                attempt = 0  # the server answered a dial: a failure after this starts from the base again

    async def _watch_channel(self, channel: Any) -> None:
        """Signal `_channel_up` whenever the channel becomes READY (a dial and TLS handshake succeeded)."""
        ready = grpc.ChannelConnectivity.READY
        state = channel.get_state(try_to_connect=False)
        while True:
            await channel.wait_for_state_change(state)
            new = channel.get_state(try_to_connect=False)
            if new == ready and state != ready:
                self._channel_up.set()
            state = new

    async def _pause(self, delay_s: float, stop: asyncio.Event) -> bool:
        """Wait `delay_s` before the next attempt, or less if the channel reaches the server meanwhile.

        Returns True if the wait was cut short that way (or the channel got
        through during the attempt that just failed). While we wait the channel
        dials on its own (short) backoff; each failed dial closes its socket,
        and a successful one is the connection the next stream uses.
        """
        # An idle channel (the server said goodbye) dials only when asked.
        self._channel.get_state(try_to_connect=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + delay_s
        stopper = asyncio.ensure_future(stop.wait())
        up = asyncio.ensure_future(self._channel_up.wait())
        try:
            done, _ = await asyncio.wait({stopper, up}, timeout=delay_s, return_when=asyncio.FIRST_COMPLETED)
            if up not in done or stopper in done:
                return False
            jitter_s = self._rng.uniform(0.0, self.options.recovery_jitter_s)
            remaining_s = min(deadline - loop.time(), jitter_s)
            log.info("control channel reached %s again; opening the stream in %.2f s", self.bundle.endpoint,
                     max(0.0, remaining_s))
            self.metrics.recoveries.inc()
            if remaining_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(stopper), remaining_s)
            return True
        finally:
            for t in (stopper, up):
                t.cancel()

    async def _session(self) -> None:
        call = self._channel.stream_stream(wire.SESSION_METHOD, request_serializer=wire.encode,
                                           response_deserializer=wire.decode)()
        try:
            await self._converse(call)
        finally:
            call.cancel()  # a no-op once the call ended; otherwise it ends it (the channel stays)

    async def _converse(self, call: Any) -> None:
        first = await asyncio.wait_for(call.read(), CONNECT_TIMEOUT_S)
        if first is grpc.aio.EOF:
            raise SessionEnded("server closed the stream before its challenge")
        msg = wire.parse_server_message(first)
        if not isinstance(msg, wire.Challenge):
            raise SessionEnded("server did not start with a challenge")
        proof = sign_bytes(self._client_key, wire.session_proof_bytes(msg.nonce, self.bundle.client),
                           SESSION_CONTEXT)
        await self._write(call, wire.hello(self.bundle.client, proof, self.book.version, AGENT))
        stats_task: asyncio.Task[None] | None = None
        try:
            while True:
                raw = await call.read()
                if raw is grpc.aio.EOF:
                    return
                msg = wire.parse_server_message(raw)
                if not self.connected:
                    # The server answered our hello with data: we are authenticated.
                    self.connected = True
                    self._channel_up.clear()  # this dial is spent: only a later one means "back again"
                    self.sessions += 1
                    self.metrics.sessions.inc()
                    self.metrics.connected.set(1)
                    log.info("control stream to %s up (running version %d)", self.bundle.endpoint,
                             self.book.version)
                    stats_task = asyncio.create_task(self._stats_loop(call))
                if isinstance(msg, wire.RuleSetMessage):
                    await self._on_ruleset(call, msg.signed)
        finally:
            self.connected = False
            self.metrics.connected.set(0)
            for task in (stats_task, self._compact_task):
                if task is not None:
                    task.cancel()
                    with _suppress_all():
                        await task
            self._compact_task = None

    async def _write(self, call: Any, msg: dict[str, Any]) -> None:
        async with self._write_lock:
            await call.write(msg)

    async def _stats_loop(self, call: Any) -> None:
        while True:
            snap = self.fwd.snapshot()
            await self._write(call, wire.stats(snap["rules"], self.fwd.active_connections(), self.quota_usage()))
            await asyncio.sleep(self.options.stats_interval_s)

    async def _reject(self, call: Any, version: Any, reason: str) -> None:
        self.rejections += 1
        self.last_rejection = reason
        self.metrics.rejected.inc()
        log.error("rule set refused, keeping the %d running rule(s) at version %d: %s",
                  len(self.book.rules), self.book.version, reason)
        await self._write(call, wire.rejected(version if isinstance(version, int) else None, reason))

    async def _on_ruleset(self, call: Any, signed: dict[str, Any]) -> None:
        self._rulesets_seen += 1
        try:
            payload = verify_document(self._signing_key, signed)
        except SignatureError as e:
            await self._reject(call, None, str(e))
            return
        try:
            plan = self.book.plan(payload)
        except NeedResync as e:
            log.info("asking for a full re-sync: %s", e)
            await self._write(call, wire.resync(str(e)))
            return
        except BundleRejected as e:
            await self._reject(call, payload.get("version"), str(e))
            return
        t0 = time.monotonic()
        loop = asyncio.get_running_loop()
        # The data plane runs the book, so a plan costs the rules it changes; a rule that failed
        # is tried again with each plan (its port may be free by now). After an apply that
        # raised, the whole set goes again.
        # An owner's limits or quota budget changing reach every rule of that owner (their
        # states cache whether they are capped and which quotas they charge): the whole set.
        whole = self._plane_in_doubt or plan.owners_changed or plan.quota_specs_changed
        dataplane_s = 0.0
        prev = self._last_results
        if plan.changes_rules or self._failed or whole:
            owners = plan.data_plane_owners()
            rules = self.book.rules_after(plan) if whole else []
            upsert = list(plan.upsert.values())
            upsert += [self.book.rules[n] for n in self._failed if n not in plan.upsert and n not in plan.remove]

            def apply() -> dict[str, str | None]:
                nonlocal dataplane_s
                started = time.monotonic()
                try:
                    if whole:
                        return self.fwd.apply(rules, owners, atomic=False)
                    return self.fwd.apply_changes(upsert, plan.remove, owners)
                finally:
                    dataplane_s = time.monotonic() - started
            try:
                applied = await loop.run_in_executor(self._executor, apply)
            except RuntimeError as e:  # forwarder closing
                await self._reject(call, plan.version, f"cannot apply: {e}")
                return
            except Exception as e:  # validation let something through: refuse the set, keep running
                log.exception("applying rule set version %d failed", plan.version)
                self._plane_in_doubt = True
                await self._reject(call, plan.version, f"cannot apply: {type(e).__name__}: {e}")
                return
            self._plane_in_doubt = False
            if whole:
                results = applied
            else:
                results = dict(prev)
                for name in plan.remove:
                    results.pop(name, None)
                results.update(applied)
        else:
            results, applied = prev, {}  # the same rules as running: the data plane is not touched
        changed = self.book.commit(plan)
        book = self.book
        # The quotas the book now holds, their counts merged with the ledger's (the data plane
        # already has the budgets: they came with the owners above).
        await loop.run_in_executor(self._executor, self._sync_quotas, book)
        await self._remember(call, loop, signed, plan.kind, book.version)
        report = {name: results.get(name) for name in changed}
        for name, reason in applied.items():  # only rules the data plane was given can have a new result
            if prev.get(name, "unset") != reason:
                report[name] = reason
        self._set_results(results, applied, plan.remove, whole)
        failed = self._failed
        self.metrics.applied.inc()
        self.metrics.version.set(book.version)
        log.info("rule set version %d %s applied in %.1f ms: %d rule(s) (%d new or changed, %d removed; "
                 "data plane %.1f ms), %d failed%s", book.version, plan.kind, (time.monotonic() - t0) * 1000,
                 len(results), len(plan.upsert), len(plan.remove), dataplane_s * 1000, len(failed),
                 "".join(f'; rule "{n}": {r}' for n, r in sorted(failed.items())[:5]))
        await self._write(call, wire.ack(book.version, report))
        await self._compact(call, plan.kind)

    async def _remember(self, call: Any, loop: asyncio.AbstractEventLoop, signed: dict[str, Any], kind: str,
                        version: int) -> None:
        """Persist an applied rule set (off the loop: it fsyncs)."""
        last_known = self.last_known
        if last_known is None:
            return
        try:
            await loop.run_in_executor(self._executor, lambda: last_known.record(signed, kind, version))
        except OSError as e:
            log.error("cannot save the last-known rule set to %s: %s (a restart without the server "
                      "would start with older rules)", last_known.path, e.strerror or e)

    async def _compact(self, call: Any, kind: str) -> None:
        """Once deltas pile up on disk, ask for a full set to replace them: when pushes pause, or now if many."""
        last_known = self.last_known
        if last_known is None:
            return
        if kind == "full":
            self._full_set_asked = False
            self._cancel_compaction()  # the file was just rewritten
        elif not last_known.wants_full_set or self._full_set_asked:
            return
        elif last_known.needs_full_set:
            self._cancel_compaction()
            await self._ask_full_set(call)
        elif self._compact_task is None or self._compact_task.done():
            self._compact_task = asyncio.create_task(self._compact_when_idle(call))

    def _cancel_compaction(self) -> None:
        if self._compact_task is not None:
            self._compact_task.cancel()
            self._compact_task = None

    async def _compact_when_idle(self, call: Any) -> None:
        while True:
            seen = self._rulesets_seen
            await asyncio.sleep(COMPACT_IDLE_S)
            if self._rulesets_seen == seen:
                break
        if not self._full_set_asked:
            await self._ask_full_set(call)

    async def _ask_full_set(self, call: Any) -> None:
        assert self.last_known is not None
        self._full_set_asked = True
        await self._write(call, wire.resync(f"{self.last_known.deltas} deltas on disk; a full set replaces them"))


def _suppress_all() -> contextlib.suppress:
    """Swallow whatever a cancelled task ends with (cleanup paths only)."""
    return contextlib.suppress(BaseException)
