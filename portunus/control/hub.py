"""Server side of the control streams: sessions, rule-set versions, pushes, acks.

Every change to a client's rules or owners is one SQLite transaction that
also raises the client's rule-set version by one; if the client is online the
matching signed delta is queued on its stream right away. Everything runs on
the event loop's thread and nothing awaits between "commit" and "queue", so a
stream always sees versions in order: the full set at attach time, then each
delta on top of it.

The hub also keeps, per client, the parsed rules in a port index (built from
the store on first use, then kept in step with every change), so checking a
new rule for overlaps costs its own ports, not a read of the client's rules.

When clients were last seen is kept in memory and written for all of them
at most once per TOUCH_FLUSH_S: one fsynced transaction per session start
and end was most of the server's time when a fleet reconnects at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from portunus.config import ConfigError, Rule, parse_rule
from portunus.control import wire
from portunus.control.pki import ServerKeys
from portunus.control.portindex import PortIndex
from portunus.control.quota_ledger import QuotaLedger, quota_payload
from portunus.control.ruleset import delta_payload, full_payload, rule_to_dict
from portunus.control.server_metrics import ServerMetrics
from portunus.control.signing import sign_document
from portunus.control.store import ClientRow, RuleRow, Store
from portunus.control.tenants_db import QuotaRow

log = logging.getLogger("portunus.server.hub")

# last_seen_at is informational: written in batches, this often at most.
TOUCH_FLUSH_S = 1.0


@dataclass
class Session:
    """One client's open stream; the writer task drains `queue` (None = close)."""

    client_id: int
    client: str
    queue: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)


@dataclass(frozen=True)
class AckResult:
    """What a client said about a version: per-rule results, or why it refused the set."""

    results: dict[str, str | None]
    rejected: str | None = None


class Hub:
    def __init__(self, store: Store, keys: ServerKeys, metrics: ServerMetrics) -> None:
        self.store = store
        self.keys = keys
        self.metrics = metrics
        self.sessions: dict[int, Session] = {}
        self._waiters: dict[int, list[tuple[int, asyncio.Future[AckResult]]]] = {}
        self._reports: dict[str, dict[str, Any]] = {}
        self._acked: dict[int, int] = {}  # client id -> last version acked on the current stream
        self._indexes: dict[int, PortIndex[int]] = {}  # client id -> its rules by rule id
        self._seen: dict[int, float] = {}  # client id -> last seen, not yet in the store
        self._flush: asyncio.TimerHandle | None = None
        self.ledger = QuotaLedger(store)
        # Read by the metrics thread: refreshed here, on the loop thread, never read from the store there.
        self.quota_metrics: dict[tuple[str, str], dict[str, Any]] = self.ledger.metrics()

    # ------------------------------------------------------------ sessions

    def attach(self, client: ClientRow) -> Session:
        """Register a fresh stream for `client` (replacing an older one) and queue the full set."""
        old = self.sessions.get(client.id)
        if old is not None:
            log.info('client "%s": new stream replaces the previous one', client.name)
            old.queue.put_nowait(None)
        session = Session(client.id, client.name)
        self.sessions[client.id] = session
        self._acked.pop(client.id, None)
        self.metrics.clients_connected.set(len(self.sessions))
        self._touch(client.id)
        session.queue.put_nowait(self.full_message(client.id))
        return session

    def detach(self, session: Session) -> None:
        if self.sessions.get(session.client_id) is session:
            del self.sessions[session.client_id]
            self._acked.pop(session.client_id, None)
            self.metrics.clients_connected.set(len(self.sessions))
            self._touch(session.client_id)

    def _touch(self, client_id: int) -> None:
        self._seen[client_id] = time.time()
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(TOUCH_FLUSH_S, self.flush_seen)

    def flush_seen(self) -> None:
        """Write the pending last-seen times (the server calls this once more when it stops)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        seen, self._seen = self._seen, {}
        if seen:
            self.store.touch_clients(seen)

    def last_seen(self, client: ClientRow) -> float | None:
        """When `client` was last seen, including a time not yet written."""
        return self._seen.get(client.id, client.last_seen_at)

    def is_online(self, client_id: int) -> bool:
        return client_id in self.sessions

    def acked_version(self, client_id: int) -> int | None:
        """The last rule-set version the client acked on its current stream (None: none yet)."""
        return self._acked.get(client_id)

    def resync(self, session: Session) -> None:
        session.queue.put_nowait(self.full_message(session.client_id))

    # ------------------------------------------------------------ rule sets

    def full_message(self, client_id: int) -> dict[str, Any]:
        client = self.store.client_by_id(client_id)
        assert client is not None
        rules = [row.spec for row in self.store.rules_for_client(client_id)]
        payload = full_payload(client.name, client.ruleset_version, rules, self.store.owners_for_client(client_id),
                               self.ledger.payload(client_id))
        self.metrics.rulesets_sent.labels("full").inc()
        return wire.ruleset(sign_document(self.keys.signing_key, payload))

    def _push(self, client_id: int, client: str, version: int, **delta: Any) -> None:
        session = self.sessions.get(client_id)
        if session is None:
            return  # offline: it gets the full set when it connects
        payload = delta_payload(client, version, **delta)
        session.queue.put_nowait(wire.ruleset(sign_document(self.keys.signing_key, payload)))
        self.metrics.rulesets_sent.labels("delta").inc()

    def _index(self, client_id: int) -> PortIndex[int]:
        index = self._indexes.get(client_id)
        if index is None:
            index = self._indexes[client_id] = PortIndex()
            for row in self.store.rules_for_client(client_id):
                try:
                    index.add(row.id, parse_rule(row.spec, source=f"stored rule {row.id}"))
                except ConfigError as e:
                    # Stored by an older, laxer server: its client refuses it anyway, and it
                    # must not block every other change on that client.
                    log.warning("stored rule %d no longer validates: %s", row.id, "; ".join(e.problems))
        return index

    def overlapping(self, client: ClientRow, rule: Rule, replacing: int | None = None) -> tuple[int, str] | None:
        """(id, why) for a rule of `client` that `rule` cannot listen next to, leaving out rule `replacing`."""
        found = self._index(client.id).overlapping(rule, ignore=() if replacing is None else (replacing,))
        return found[0] if found else None

    def create_rule(self, client: ClientRow, rule: Rule, user_id: int | None = None) -> tuple[RuleRow, int]:
        spec = rule_to_dict(rule)
        index = self._index(client.id)
        with self.store.transaction():
            row = self.store.add_rule(client.id, rule.name, spec, user_id)
            version = self.store.bump_version(client.id)
        index.add(row.id, rule)
        self._push(client.id, client.name, version, upsert=[spec])
        return row, version

    def replace_rule(self, row: RuleRow, rule: Rule) -> int:
        spec = rule_to_dict(rule)
        index = self._index(row.client_id)
        with self.store.transaction():
            self.store.replace_rule(row.id, rule.name, spec)
            version = self.store.bump_version(row.client_id)
        index.add(row.id, rule)
        remove = [row.name] if row.name != rule.name else []
        self._push(row.client_id, row.client, version, upsert=[spec], remove=remove)
        return version

    def delete_rule(self, row: RuleRow) -> int:
        index = self._index(row.client_id)
        with self.store.transaction():
            self.store.delete_rule(row.id)
            version = self.store.bump_version(row.client_id)
        index.discard(row.id)
        self._push(row.client_id, row.client, version, remove=[row.name])
        return version

    def set_owner(self, client: ClientRow, owner: str, rate_limit: dict[str, Any]) -> int:
        with self.store.transaction():
            self.store.set_owner(client.id, owner, rate_limit)
            version = self.store.bump_version(client.id)
        self._push(client.id, client.name, version, owners={owner: rate_limit})
        return version

    def push_quota(self, client_id: int, client: str, owner: str, row: QuotaRow | None) -> int:
        """Send a quota change (None: removed) to the client as a delta; returns its version."""
        with self.store.transaction():
            version = self.store.bump_version(client_id)
        self._push(client_id, client, version, quotas={owner: quota_payload(row) if row is not None else None})
        return version

    def tick_quotas(self) -> None:
        """Roll quota periods on the server's clock; tell each client about its new periods."""
        for row in self.ledger.tick():
            self.push_quota(row.client_id, row.client, row.owner, row)
        self.quota_metrics = self.ledger.metrics()

    # ------------------------------------------------------------ acks

    async def wait_ack(self, client_id: int, version: int, timeout_s: float) -> AckResult | None:
        """The client's answer for `version` (or a later one), or None after `timeout_s`."""
        fut: asyncio.Future[AckResult] = asyncio.get_running_loop().create_future()
        entry = (version, fut)
        self._waiters.setdefault(client_id, []).append(entry)
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout_s)
        except TimeoutError:
            return None
        finally:
            waiters = self._waiters.get(client_id, [])
            if entry in waiters:
                waiters.remove(entry)

    def _resolve(self, client_id: int, version: int, result: AckResult) -> None:
        for v, fut in list(self._waiters.get(client_id, [])):
            if v <= version and not fut.done():
                fut.set_result(result)

    def on_ack(self, session: Session, ack: wire.Ack) -> None:
        if self.sessions.get(session.client_id) is session:
            self._acked[session.client_id] = ack.version
        self.store.set_rule_statuses(session.client_id, ack.results)
        for name, reason in ack.results.items():
            self.metrics.rule_acks.labels("active" if reason is None else "failed").inc()
            if reason is not None:
                log.warning('client "%s": rule "%s" failed: %s', session.client, name, reason)
        self._resolve(session.client_id, ack.version, AckResult(ack.results))

    def on_rejected(self, session: Session, rej: wire.Rejected) -> None:
        log.error('client "%s" refused rule set version %s: %s', session.client, rej.version, rej.reason)
        self.metrics.rulesets_rejected.inc()
        if rej.version is not None:
            self._resolve(session.client_id, rej.version, AckResult({}, rejected=rej.reason))

    def on_stats(self, session: Session, stats: wire.Stats) -> None:
        self._reports[session.client] = {"rules": stats.rules, "active_connections": stats.active_connections}
        if stats.quotas:
            for row in self.ledger.on_report(session.client_id, stats.quotas):
                self.push_quota(row.client_id, row.client, row.owner, row)
            # The metrics copy is refreshed by tick_quotas, once a second, not once per report.

    def reports(self) -> dict[str, dict[str, Any]]:
        return dict(self._reports)

    def report(self, client: str) -> dict[str, Any] | None:
        return self._reports.get(client)
