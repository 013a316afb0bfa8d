"""The operator HTTP API (aiohttp). Bearer tokens, roles, JSON errors, audit.

    POST   /v1/client-enrollments                     operator  {"name", "address", "ttl_secs"?} -> 201 {"uri", "id", ...}
                                                      (a newer URI for a client revokes its outstanding one)
    GET    /v1/client-enrollments[?client=&limit=&after=]   viewer    URIs: id, client, status, expiry (no secret)
    DELETE /v1/client-enrollments/{id}                operator  revoke an unused URI -> 200
    GET    /v1/clients[?client=&limit=&after=]        viewer
    PUT    /v1/clients/{client}/owners/{owner}/rate-limit   operator  {rate_limit keys} -> 200
    POST   /v1/rules[?wait=false]                     operator  rule (TOML keys) + "client" -> 201 | 202
    GET    /v1/rules[?client=NAME&limit=N&after=ID]   viewer
    GET    /v1/rules/{id}                             viewer
    PUT    /v1/rules/{id}                             operator  full replacement -> 200
    DELETE /v1/rules/{id}                             operator  -> 200
    GET    /v1/audit[?limit=N&after_id=ID&before_id=ID&action=A&actor=A&result=PREFIX&q=TEXT]   viewer
                                                      newest first; filters: exact action / actor, result
                                                      prefix (ok, denied, error), q in target or detail
    POST   /v1/tokens                                 admin     {"name", "role", "user_id"?} -> 201 {"token", ...}
    GET    /v1/tokens                                 admin
    DELETE /v1/tokens/{id}                            admin
    GET    /healthz                                   no auth
    GET    /, /ui/...                                 no auth   the web UI's static pages (web_ui)
    GET    /v1/auth/session                           no auth   {"authenticated", "user", "csrf_token"} of the cookie
    users, login sessions, grants, quotas             see tenants_api

The roles above are token scopes (rbac). On top of them a user (role "user")
sees and changes only the rules they own and creates rules only inside their
grants; enrollments, owner limits, users, grants and quotas are a
superadmin's. Enrollments and owner limits need a superadmin, token
administration the admin scope (a user manages their own tokens).

List calls page by row id: at most `limit` rows (default and maximum
MAX_PAGE) after row id `after`, oldest first, and "next_after": the `after`
of the next page, or null on the last one. `client=NAME` keeps one client's
rows (404 if there is no such client).

Errors are {"error": {"code", "message"}} with 400 (validation; "problems"
lists every issue), 401, 403 (code "forbidden" and a machine-readable "reason":
role_required, not_owner, client_not_granted, protocol_not_granted,
port_outside_grant, csrf_origin_mismatch, csrf_token_missing, csrf_token_mismatch; every denial is audited), 404, 409 (port in use on that client, duplicate
name, enrollment already used), 429 (too many failed authentications from
that address: see `guard`), 422 (the client could not activate the rule: the change is rolled
back) and 504 (the client did not ack in time: the change stays stored and is
applied when the client connects; 504 bodies carry the rule "id").
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from portunus.bounds import Bounded, show
from portunus.config import (
    ConfigError,
    Rule,
    parse_owner_rate_limit,
    parse_rule,
    valid_name,
)
from portunus.control import csrf, rbac, web_ui
from portunus.control.api_errors import ApiError, denied
from portunus.control.enrollment import EnrollmentUri, new_secret, secret_hash
from portunus.control.guard import Guard
from portunus.control.hub import AckResult, Hub
from portunus.control.ruleset import rate_limit_to_dict
from portunus.control.settings import ENROLLMENT_TTL_SECS, ServerSettings
from portunus.control.store import AuditEntry, ClientRow, EnrollmentRow, RuleRow, TokenRow
from portunus.control.tenants_api import SAFE_METHODS, SESSION_COOKIE, TenantRoutes
from portunus.control.tenants_db import ROOT_USER_ID, ROOT_USERNAME

log = logging.getLogger("portunus.server.api")

# Request bodies are small JSON documents; refuse anything that is not.
MAX_BODY_BYTES = 1 << 20
MAX_AUDIT_PAGE = 1000
MAX_AUDIT_FILTER_CHARS = 256
# Row ids are SQLite INTEGERs: at most 2^63 - 1 (19 digits); a longer path segment names no row.
_ID_RE = re.compile(r"[0-9]{1,19}")
_MAX_ROW_ID = 2**63 - 1
# Timestamps up to the year 9999 render as ISO 8601.
_MAX_ISO_TS = 253402300800.0
AUDIT_LIMIT = Bounded(True, 1, MAX_AUDIT_PAGE, "entries")
AUDIT_AFTER_ID = Bounded(True, 0, _MAX_ROW_ID, "audit entry id")
# A page of 1,000 rules is ~700 KB of JSON: big enough for scripts, small enough to render at once.
MAX_PAGE = 1000
PAGE_LIMIT = Bounded(True, 1, MAX_PAGE, "rows")
PAGE_AFTER = Bounded(True, 0, _MAX_ROW_ID, "row id")
LIST_QUERY_KEYS = ("client", "limit", "after")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error_response(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **extra}}, status=status)


# ------------------------------------------------------------------ rendering


def _iso(ts: float | None) -> str | None:
    if ts is None or not math.isfinite(ts) or not 0 <= ts < _MAX_ISO_TS:
        return None  # only a row written by an older, laxer server holds such a time
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def render_rule(row: RuleRow, stats: dict[str, Any] | None) -> dict[str, Any]:
    return {"id": row.id, "client": row.client, "name": row.name, "status": row.status,
            "status_reason": row.status_reason, "rule": row.spec, "created_at": _iso(row.created_at),
            "updated_at": _iso(row.updated_at), "stats": stats}


def render_enrollment(e: EnrollmentRow, now: float) -> dict[str, Any]:
    return {"id": e.id, "client": e.client, "status": e.status(now), "created_at": _iso(e.created_at),
            "created_by": e.created_by, "expires_at": _iso(e.expires_at), "used_at": _iso(e.used_at),
            "revoked_at": _iso(e.revoked_at), "revoked_by": e.revoked_by}


def render_token(t: TokenRow) -> dict[str, Any]:
    return {"id": t.id, "name": t.name, "role": t.role, "user_id": t.user_id, "created_at": _iso(t.created_at),
            "created_by": t.created_by, "revoked_at": _iso(t.revoked_at)}


def render_audit(e: AuditEntry) -> dict[str, Any]:
    return {"id": e.id, "ts": _iso(e.ts), "actor": e.actor, "role": e.role, "action": e.action,
            "target": e.target, "detail": e.detail, "result": e.result, "reason": e.reason}


# ------------------------------------------------------------------ the API


class OperatorApi(TenantRoutes):
    def __init__(self, hub: Hub, settings: ServerSettings, fingerprint: str, guard: Guard) -> None:
        self.hub = hub
        self.guard = guard
        self.store = hub.store
        self.metrics = hub.metrics
        self.settings = settings
        self.fingerprint = fingerprint
        self._iso = _iso
        self._init_tenants()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._count, self._errors, self._auth], client_max_size=MAX_BODY_BYTES)
        r = app.router
        r.add_get("/healthz", self.healthz)
        r.add_post("/v1/client-enrollments", self._audited("enrollment.create", rbac.WRITE, self.create_enrollment))
        r.add_get("/v1/client-enrollments", self._reader(self.list_enrollments))
        r.add_delete("/v1/client-enrollments/{id}", self._audited("enrollment.revoke", rbac.WRITE,
                                                                  self.revoke_enrollment))
        r.add_get("/v1/clients", self._reader(self.list_clients))
        r.add_put("/v1/clients/{client}/owners/{owner}/rate-limit",
                  self._audited("owner.rate_limit.set", rbac.WRITE, self.set_owner_rate_limit))
        r.add_post("/v1/rules", self._audited("rule.create", rbac.WRITE, self.create_rule))
        r.add_get("/v1/rules", self._reader(self.list_rules))
        r.add_get("/v1/rules/{id}", self._reader(self.get_rule))
        r.add_put("/v1/rules/{id}", self._audited("rule.update", rbac.WRITE, self.replace_rule))
        r.add_delete("/v1/rules/{id}", self._audited("rule.delete", rbac.WRITE, self.delete_rule))
        r.add_get("/v1/audit", self._reader(self.list_audit))
        r.add_post("/v1/tokens", self._audited("token.create", rbac.ADMIN, self.create_token))
        r.add_get("/v1/tokens", self._reader(self.list_tokens, rbac.ADMIN))
        r.add_delete("/v1/tokens/{id}", self._audited("token.revoke", rbac.ADMIN, self.revoke_token))
        self._add_tenant_routes(r)
        web_ui.add_routes(r, self)
        return app

    # ------------------------------------------------------------ middleware

    @web.middleware
    async def _count(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        status = 500
        try:
            resp = await handler(request)
            status = resp.status
            return resp
        finally:
            info = request.match_info.route.resource
            route = info.canonical if info is not None else "unmatched"
            self.metrics.operator_requests.labels(request.method, route, str(status)).inc()

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as e:
            return _error_response(e.status, e.code, e.message, **e.extra)
        except web.HTTPException as e:
            if e.status < 400:
                raise
            code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(e.status, "http_error")
            return _error_response(e.status, code, e.reason)
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return _error_response(500, "internal", "internal server error (see the server log)")

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in ("/healthz", "/v1/auth/login", web_ui.SESSION_PATH) or web_ui.is_asset_path(request.path):
            return await handler(request)
        peer = request.remote or "unknown"
        wait_s = self.guard.retry_after_s("http", peer)
        if wait_s is not None:
            # Credentials are not even looked at: a blocked peer learns nothing about its guesses.
            self.metrics.auth_failures.labels("http", "throttled").inc()
            raise ApiError(429, "too_many_failures", f"too many failed authentications from {peer}; "
                           f"retry in {math.ceil(wait_s)} s", retry_after_secs=math.ceil(wait_s))
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        cookie = request.cookies.get(SESSION_COOKIE)
        if (scheme.lower() != "bearer" or not token) and cookie:
            principal = self._session_principal(cookie)
            if principal is None:
                self._auth_failed(request, peer, "session", "expired or unknown session")
                raise ApiError(401, "unauthenticated", "session expired or logged out (POST /v1/auth/login)")
            if request.method not in SAFE_METHODS:
                self._check_origin(request, principal)
                self._check_csrf_token(request, principal, cookie)
            request["principal"] = principal
            return await handler(request)
        if scheme.lower() != "bearer" or not token:
            self._auth_failed(request, peer, "missing", "missing bearer token")
            raise ApiError(401, "unauthenticated", "missing bearer token (send 'Authorization: Bearer TOKEN') "
                           "or session cookie (POST /v1/auth/login)")
        principal = self._principal(token)
        if principal is None:
            self._auth_failed(request, peer, "invalid", "invalid or revoked token")
            raise ApiError(401, "unauthenticated", "invalid or revoked token")
        request["principal"] = principal
        return await handler(request)

    def _check_csrf_token(self, request: web.Request, p: rbac.Principal, cookie: str) -> None:
        """Refuse a cookie-authenticated change without the session's CSRF token (see `csrf`)."""
        given = request.headers.get(csrf.HEADER)
        if csrf.token_matches(cookie, given):
            return
        reason = "csrf_token_missing" if given is None else "csrf_token_mismatch"
        self.store.add_audit(p.actor, p.audit_role, "csrf.refused", f"{request.method} {request.path}",
                             None, f"denied: {reason}", reason=reason, user_id=p.user_id)
        raise denied(reason, f"cross-site request refused: {'no' if given is None else 'wrong'} {csrf.HEADER} "
                     "header (a change made with the session cookie must carry the token the login answer and "
                     f"GET {web_ui.SESSION_PATH} give; scripts use a bearer token)")

    def _auth_failed(self, request: web.Request, peer: str, reason: str, why: str) -> None:
        self.metrics.auth_failures.labels("http", reason).inc()
        self.guard.failed("http", peer, "auth.failed", show(f"{request.method} {request.path}"), f"refused: {why}")

    def _principal(self, token: str) -> rbac.Principal | None:
        if rbac.same_token(token, self.settings.operator_token):
            return rbac.Principal("operator_token", "admin", ROOT_USER_ID, ROOT_USERNAME, rbac.SUPERADMIN)
        row = self.store.token_by_hash(rbac.token_hash(token))
        if row is None:
            return None
        return self._token_principal(row.name, row.role, row.user_id)

    def _reader(self, handler: Handler, permission: str = rbac.READ) -> Handler:
        """Check the scope and run a read; a denied read is audited (an allowed one is not)."""
        async def wrapped(request: web.Request) -> web.StreamResponse:
            p: rbac.Principal = request["principal"]
            try:
                if not p.may(permission):
                    raise denied("role_required", f"role {p.role} may not {permission}")
                return await handler(request)
            except ApiError as e:
                if e.status == 403:
                    info = request.match_info.route.resource
                    action = f"read {info.canonical if info is not None else request.path}"
                    self.store.add_audit(p.actor, p.audit_role, action, show(request.path), None,
                                         f"denied: {e.extra.get('reason')}: {e.message}",
                                         reason=e.extra.get("reason"), user_id=p.user_id)
                raise
        return wrapped

    def _audited(self, action: str, permission: str, handler: Handler) -> Handler:
        """Check the role, run the handler, and write one audit entry with the outcome."""
        async def wrapped(request: web.Request) -> web.StreamResponse:
            p: rbac.Principal = request["principal"]
            request["audit_target"] = None
            request["audit_detail"] = None
            result = "error 500"
            reason = None
            try:
                if not p.may(permission):
                    raise denied("role_required", f"role {p.role} may not {permission} ({action})")
                resp = await handler(request)
                result = "ok" if resp.status < 300 else f"status {resp.status}"
                return resp
            except ApiError as e:
                if e.status == 403:
                    reason = e.extra.get("reason")
                    result = f"denied: {reason}: {e.message}"
                else:
                    result = f"error {e.status} {e.code}: {e.message}"
                raise
            finally:
                self.store.add_audit(p.actor, p.audit_role, action, request["audit_target"],
                                     request["audit_detail"], result, reason=reason, user_id=p.user_id)
        return wrapped

    # ------------------------------------------------------------ helpers

    async def _body(self, request: web.Request) -> dict[str, Any]:
        body = await request.read()
        try:
            data = json.loads(body)
        except RecursionError:
            raise ApiError(400, "bad_json", "request body is nested too deeply") from None
        except ValueError as e:  # JSONDecodeError, and integers beyond the 4,300-digit conversion limit
            raise ApiError(400, "bad_json", f"request body is not JSON: {show(str(e))}") from None
        if not isinstance(data, dict):
            raise ApiError(400, "bad_json", "request body must be a JSON object")
        try:
            # JSON's \ud800 escapes decode to lone surrogates, which no UTF-8
            # store (SQLite, logs) accepts: refuse them here, once.
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, "bad_json", "request body holds a string that is not valid Unicode "
                           "(an unpaired surrogate escape)") from None
        request["audit_detail"] = data
        return data

    @staticmethod
    def _row_id(request: web.Request) -> int | None:
        """The {id} path segment as a row id, or None if it cannot name one."""
        raw = request.match_info["id"]
        if not _ID_RE.fullmatch(raw) or int(raw) > _MAX_ROW_ID:
            return None
        return int(raw)

    @staticmethod
    def _query_int(request: web.Request, key: str, default: int, typ: Bounded) -> int:
        raw = request.query.get(key)
        if raw is None:
            return default
        value = int(raw) if re.fullmatch(r"[0-9]{1,20}", raw) else None
        if value is None or not typ.contains(value):
            raise ApiError(400, "invalid", f"{key} must be {typ.describe()}, got {show(raw)}")
        return value

    def _list_query(self, request: web.Request) -> tuple[ClientRow | None, int, int]:
        """(client filter, limit, after) of a list call; unknown query keys are refused."""
        unknown = sorted(set(request.query) - set(LIST_QUERY_KEYS))
        if unknown:
            raise ApiError(400, "invalid", f"unknown query parameter(s) {', '.join(show(k) for k in unknown)} "
                           f"(allowed: {', '.join(LIST_QUERY_KEYS)})")
        name = request.query.get("client")
        client = self._client(name) if name is not None else None
        return (client, self._query_int(request, "limit", MAX_PAGE, PAGE_LIMIT),
                self._query_int(request, "after", 0, PAGE_AFTER))

    @staticmethod
    def _page(key: str, items: list[dict[str, Any]], ids: list[int], limit: int) -> web.Response:
        """One page of a list call; `ids` are the row ids fetched (up to limit + 1, to see if more follow)."""
        return web.json_response({key: items[:limit], "next_after": ids[limit - 1] if len(ids) > limit else None})

    def _client(self, name: Any) -> ClientRow:
        if not isinstance(name, str):
            raise ApiError(400, "invalid", f"client must be a client name string, got {show(name)}")
        client = self.store.client_by_name(name)
        if client is None:
            raise ApiError(404, "client_not_found", f'no client named "{name}" (enroll it first)')
        return client

    def _rule_row(self, request: web.Request) -> RuleRow:
        rule_id = self._row_id(request)
        row = self.store.rule(rule_id) if rule_id is not None else None
        if row is None:
            raise ApiError(404, "rule_not_found", f"no rule with id {show(request.match_info['id'])}")
        return row

    @staticmethod
    def _parse_rule(data: dict[str, Any]) -> Rule:
        try:
            return parse_rule(data, extra_keys=("client",), source="request body")
        except ConfigError as e:
            raise ApiError(400, "invalid_rule", "; ".join(e.problems), problems=e.problems) from None

    def _check_conflicts(self, client: ClientRow, rule: Rule, replacing: int | None = None) -> None:
        other = self.store.rule_by_name(client.id, rule.name)
        if other is not None and other.id != replacing:
            raise ApiError(409, "duplicate_name", f'client "{client.name}" already has a rule named '
                           f'"{rule.name}" (id {other.id})', conflicting_rule_id=other.id)
        found = self.hub.overlapping(client, rule, replacing)
        if found is not None:
            other_id, problem = found
            code = "port_in_use" if "overlaps" in problem else "sni_conflict"
            raise ApiError(409, code, f'{problem} (id {other_id}) on client "{client.name}"',
                           conflicting_rule_id=other_id)

    async def _await_rule(self, client: ClientRow, version: int, rule_name: str) -> tuple[AckResult | None, str | None]:
        """(ack, failure reason of `rule_name`) once the client acked `version`; ack None on timeout."""
        ack = await self.hub.wait_ack(client.id, version, self.settings.ack_timeout_secs)
        if ack is None:
            return None, None
        if ack.rejected is not None:
            return ack, f"client refused the rule set: {ack.rejected}"
        if rule_name in ack.results:
            return ack, ack.results[rule_name]
        row = self.store.rule_by_name(client.id, rule_name)
        if row is not None and row.status == "failed":
            return ack, row.status_reason or "failed"
        return ack, None

    def _timeout_error(self, client: ClientRow, what: str, **extra: Any) -> ApiError:
        online = self.hub.is_online(client.id)
        return ApiError(504, "ack_timeout", f'client "{client.name}" did not ack {what} within '
                        f"{self.settings.ack_timeout_secs:g} s ({'online' if online else 'offline'}); "
                        "the change is stored and is applied when the client syncs", **extra)

    # ------------------------------------------------------------ handlers

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def create_enrollment(self, request: web.Request) -> web.Response:
        self._require_superadmin(request, "enroll clients")
        data = await self._body(request)
        unknown = sorted(set(data) - {"name", "address", "ttl_secs"})
        if unknown:
            raise ApiError(400, "invalid", f"unknown key(s) {', '.join(unknown)} (allowed: name, address, ttl_secs)")
        name, address = data.get("name"), data.get("address")
        if not valid_name(name):
            raise ApiError(400, "invalid", f"name must be 1-128 chars of letters, digits, '_.:-' (got {show(name)})")
        if not isinstance(address, str) or not address or len(address) > 255 or not address.isprintable():
            raise ApiError(400, "invalid", "address must be the client's host or IP as a printable string "
                           f"of 1-255 characters (got {show(address)})")
        ttl = data.get("ttl_secs", self.settings.enrollment_ttl_secs)
        problem = ENROLLMENT_TTL_SECS.problem(ttl)
        if problem is not None:
            raise ApiError(400, "invalid", f"ttl_secs {problem}")
        request["audit_target"] = f"client {name}"
        client = self.store.client_by_name(name)
        if client is not None and client.public_key is not None:
            raise ApiError(409, "client_exists", f'client "{name}" is already enrolled')
        if client is None:
            client = self.store.create_client(name, address)
        secret = new_secret()
        enrollment_id, superseded = self.store.add_enrollment(client.id, secret_hash(secret), float(ttl),
                                                              request["principal"].actor)
        request["audit_target"] = f"enrollment {enrollment_id} for client {name}"
        uri = EnrollmentUri(self.settings.endpoint, secret, self.fingerprint).render()
        return web.json_response({"uri": uri, "id": enrollment_id, "client": name,
                                  "expires_at": _iso(time.time() + float(ttl)), "superseded": superseded,
                                  "server_fingerprint": f"sha256:{self.fingerprint}"}, status=201)

    async def list_enrollments(self, request: web.Request) -> web.Response:
        self._require_superadmin(request, "list enrollments")
        client, limit, after = self._list_query(request)
        rows = self.store.list_enrollments(client_id=client.id if client else None, after_id=after, limit=limit + 1)
        now = time.time()
        return self._page("enrollments", [render_enrollment(e, now) for e in rows[:limit]], [e.id for e in rows], limit)

    async def revoke_enrollment(self, request: web.Request) -> web.Response:
        self._require_superadmin(request, "revoke enrollments")
        enrollment_id = self._row_id(request)
        row = self.store.enrollment(enrollment_id) if enrollment_id is not None else None
        if row is None:
            raise ApiError(404, "enrollment_not_found", f"no enrollment with id {show(request.match_info['id'])}")
        request["audit_target"] = f"enrollment {row.id} for client {row.client}"
        if row.used_at is not None:
            raise ApiError(409, "enrollment_used", f"enrollment {row.id} was already used: client {row.client} "
                           "is enrolled (its URI can no longer be redeemed)")
        self.store.revoke_enrollment(row.id, request["principal"].actor)
        updated = self.store.enrollment(row.id)
        assert updated is not None
        return web.json_response(render_enrollment(updated, time.time()))

    def _client_view(self, c: ClientRow) -> dict[str, Any]:
        counts = {"active": 0, "failed": 0, "pending": 0, **self.store.rule_status_counts(c.id)}
        report = self.hub.report(c.name)
        status = "pending_enrollment" if c.public_key is None else ("online" if self.hub.is_online(c.id) else "offline")
        return {"name": c.name, "address": c.address, "status": status, "enrolled_at": _iso(c.enrolled_at),
                "last_seen_at": _iso(self.hub.last_seen(c)), "ruleset_version": c.ruleset_version,
                "acked_version": self.hub.acked_version(c.id), "rules": counts,
                "owners": self.store.owners_for_client(c.id),
                "active_connections": report.get("active_connections") if report else None}

    async def list_clients(self, request: web.Request) -> web.Response:
        client, limit, after = self._list_query(request)
        if client is not None:
            rows = [client] if client.id > after else []
        else:
            rows = self.store.list_clients(after_id=after, limit=limit + 1)
        # A user sees the clients of their grants: the page is filtered, paging goes by every row.
        visible = self._visible_clients(request, rows[:limit])
        return self._page("clients", [self._client_view(c) for c in visible], [c.id for c in rows], limit)

    async def set_owner_rate_limit(self, request: web.Request) -> web.Response:
        self._require_superadmin(request, "set owner limits")
        data = await self._body(request)
        client = self._client(request.match_info["client"])
        owner = request.match_info["owner"]
        request["audit_target"] = f"owner {owner} on client {client.name}"
        if not valid_name(owner):
            raise ApiError(400, "invalid", f"owner must be 1-128 chars of letters, digits, '_.:-' (got {show(owner)})")
        try:
            rl = parse_owner_rate_limit(data, source="request body")
        except ConfigError as e:
            raise ApiError(400, "invalid_rate_limit", "; ".join(e.problems), problems=e.problems) from None
        limits = rate_limit_to_dict(rl)
        version = self.hub.set_owner(client, owner, limits)
        ack = await self.hub.wait_ack(client.id, version, self.settings.ack_timeout_secs)
        if ack is None:
            raise self._timeout_error(client, f"the limits of owner {owner}")
        if ack.rejected is not None:
            raise ApiError(422, "client_rejected", f"client refused the rule set: {ack.rejected}")
        return web.json_response({"client": client.name, "owner": owner, "rate_limit": limits, "status": "active"})

    async def create_rule(self, request: web.Request) -> web.Response:
        data = await self._body(request)
        self._user_rule_body(request, data)
        client = self._client(data.get("client"))
        rule = self._parse_rule(data)
        request["audit_target"] = f'rule "{rule.name}" on client {client.name}'
        self._authorize_rule(request, client, rule)
        self._check_conflicts(client, rule)
        row, version = self.hub.create_rule(client, rule, request["principal"].user_id)
        request["audit_target"] = f'rule {row.id} "{rule.name}" on client {client.name}'
        if request.query.get("wait", "true").lower() in ("false", "0", "no"):
            return web.json_response({"id": row.id, "status": "pending"}, status=202)
        ack, failure = await self._await_rule(client, version, rule.name)
        if ack is None:
            raise self._timeout_error(client, f'rule "{rule.name}"', id=row.id)
        if failure is not None:
            self.hub.delete_rule(row)  # roll back: the operator asked for a working rule
            raise ApiError(422, "rule_failed", f'client "{client.name}" could not activate rule "{rule.name}": '
                           f"{failure} (rule not created)", reason=failure)
        return web.json_response({"id": row.id, "status": "active"}, status=201)

    async def list_rules(self, request: web.Request) -> web.Response:
        client, limit, after = self._list_query(request)
        rows = self.store.list_rules(client_id=client.id if client else None, after_id=after, limit=limit + 1)
        # A user sees their own rules: the page is filtered, paging goes by every row.
        visible = self._visible_rules(request, rows[:limit])
        return self._page("rules", [render_rule(r, self._rule_stats(r)) for r in visible], [r.id for r in rows],
                          limit)

    def _rule_stats(self, row: RuleRow) -> dict[str, Any] | None:
        report = self.hub.report(row.client)
        return report["rules"].get(row.name) if report else None

    async def get_rule(self, request: web.Request) -> web.Response:
        row = self._rule_row(request)
        self._check_owner(request, row)
        return web.json_response(render_rule(row, self._rule_stats(row)))

    async def replace_rule(self, request: web.Request) -> web.Response:
        row = self._rule_row(request)
        request["audit_target"] = f'rule {row.id} "{row.name}" on client {row.client}'
        self._check_owner(request, row)
        data = await self._body(request)
        self._user_rule_body(request, data)
        data.setdefault("client", row.client)
        if data["client"] != row.client:
            raise ApiError(400, "invalid", f"a rule cannot move between clients (rule {row.id} is on {row.client}); "
                           "delete it and create a new one")
        client = self._client(row.client)
        rule = self._parse_rule(data)
        self._authorize_rule(request, client, rule)
        self._check_conflicts(client, rule, replacing=row.id)
        version = self.hub.replace_rule(row, rule)
        ack, failure = await self._await_rule(client, version, rule.name)
        if ack is None:
            raise self._timeout_error(client, f'the change of rule "{rule.name}"', id=row.id)
        if failure is not None:
            old = parse_rule(row.spec, source=f"stored rule {row.id}")
            current = self.store.rule(row.id)
            if current is not None:
                self.hub.replace_rule(current, old)  # roll back to the definition that worked
            raise ApiError(422, "rule_failed", f'client "{client.name}" could not activate the new definition of '
                           f'rule "{rule.name}": {failure} (previous definition restored)', reason=failure)
        return web.json_response({"id": row.id, "status": "active"})

    async def delete_rule(self, request: web.Request) -> web.Response:
        row = self._rule_row(request)
        request["audit_target"] = f'rule {row.id} "{row.name}" on client {row.client}'
        self._check_owner(request, row)
        version = self.hub.delete_rule(row)
        # An offline client drops the rule when it syncs; only an online one is worth waiting for.
        ack = None
        if self.hub.is_online(row.client_id):
            ack = await self.hub.wait_ack(row.client_id, version, self.settings.ack_timeout_secs)
        return web.json_response({"id": row.id, "status": "deleted", "client_acked": ack is not None})

    async def list_audit(self, request: web.Request) -> web.Response:
        limit = self._query_int(request, "limit", 100, AUDIT_LIMIT)
        after = self._query_int(request, "after_id", 0, AUDIT_AFTER_ID)
        before = self._query_int(request, "before_id", 0, AUDIT_AFTER_ID) if "before_id" in request.query else None
        filters: dict[str, str] = {}
        for key, arg in (("action", "action"), ("actor", "actor"), ("result", "result"), ("q", "text")):
            value = request.query.get(key)
            if value is None or value == "":
                continue
            if len(value) > MAX_AUDIT_FILTER_CHARS or not value.isprintable():
                raise ApiError(400, "invalid", f"{key} must be printable text of at most {MAX_AUDIT_FILTER_CHARS} "
                               f"characters, got {show(value)}")
            filters[arg] = value
        p: rbac.Principal = request["principal"]
        entries = self.store.list_audit(limit=limit, after_id=after, before_id=before,
                                        user_id=None if p.superadmin else p.user_id, **filters)
        return web.json_response({"entries": [render_audit(e) for e in entries]})

    async def create_token(self, request: web.Request) -> web.Response:
        data = await self._body(request)
        request["audit_detail"] = {k: v for k, v in data.items() if k != "token"}
        name, role = data.get("name"), data.get("role")
        unknown = sorted(set(data) - {"name", "role", "user_id"})
        if unknown:
            raise ApiError(400, "invalid", f"unknown key(s) {', '.join(unknown)} (allowed: name, role, user_id)")
        p: rbac.Principal = request["principal"]
        owner_id = data.get("user_id", p.user_id)
        if owner_id != p.user_id:
            self._require_superadmin(request, "create tokens for other users")
            if not isinstance(owner_id, int) or isinstance(owner_id, bool) or self.tenants.user(owner_id) is None:
                raise ApiError(404, "user_not_found", f"no user with id {show(owner_id)}")
        if not valid_name(name):
            raise ApiError(400, "invalid", f"name must be 1-128 chars of letters, digits, '_.:-' (got {show(name)})")
        if role not in rbac.ROLES:
            raise ApiError(400, "invalid", f"role must be one of {', '.join(rbac.ROLES)} (got {show(role)})")
        request["audit_target"] = f"token {name} ({role})"
        if any(t.name == name for t in self.store.list_tokens()):
            raise ApiError(409, "duplicate_name", f'a token named "{name}" exists (names stay taken after revocation)')
        token = rbac.new_token()
        row = self.store.add_token(name, role, rbac.token_hash(token), p.actor, owner_id)
        return web.json_response({**render_token(row), "token": token}, status=201)

    async def list_tokens(self, request: web.Request) -> web.Response:
        p: rbac.Principal = request["principal"]
        rows = [t for t in self.store.list_tokens() if p.superadmin or t.user_id == p.user_id]
        return web.json_response({"tokens": [render_token(t) for t in rows]})

    async def revoke_token(self, request: web.Request) -> web.Response:
        token_id = self._row_id(request)
        row = self.store.token_by_id(token_id) if token_id is not None else None
        if row is None:
            raise ApiError(404, "token_not_found", f"no token with id {show(request.match_info['id'])}")
        request["audit_target"] = f"token {row.name}"
        p: rbac.Principal = request["principal"]
        if not p.superadmin and row.user_id != p.user_id:
            raise denied("not_owner", f"token {row.id} belongs to another user")
        self.store.revoke_token(row.id)
        return web.json_response({"id": row.id, "status": "revoked"})
