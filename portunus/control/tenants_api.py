"""Operator API routes for users, login sessions, grants and traffic quotas (a mixin of OperatorApi).

    POST   /v1/auth/login                       none       {"username", "password"} -> 200, sets the session cookie
    POST   /v1/auth/logout                      any        ends the session, clears the cookie
    GET    /v1/auth/whoami                      any        who the request authenticates as
    POST   /v1/users                            superadmin {"username", "password", "role": "superadmin"|"user"} -> 201
    GET    /v1/users                            any        superadmin: every user; user: themselves
    DELETE /v1/users/{id}                       superadmin 409 while the user owns rules
    PUT    /v1/users/{id}/password              self or superadmin  {"password"}
    POST   /v1/grants                           superadmin {"user_id", "client" (name or "*"), "listen_port_start",
                                                            "listen_port_end", "protocols": ["tcp", "udp"]} -> 201
    GET    /v1/grants[?user_id=N]               any        a user sees their own
    DELETE /v1/grants/{id}                      superadmin 409 grant_in_use while it alone covers some of the user's rules
    PUT    /v1/users/{id}/quotas/{client}       superadmin {"bytes", "period": "monthly"|"daily"|"never", "reset_day"}
    GET    /v1/users/{id}/quotas/{client}/status  self or superadmin  used, limit, period end, exhausted
    DELETE /v1/users/{id}/quotas/{client}       superadmin
    GET    /v1/quotas                           any        every quota's status (a user: their own)

Sessions: the cookie `portunus_session` (HttpOnly, SameSite=Strict, Path=/;
Secure on HTTPS) carries 256 random bits; state.db keeps only their SHA-256.
A request authenticated by the cookie that changes anything must come from
the server's own origin: its Origin header must equal scheme://Host, or it
is refused (403, reason csrf_origin_mismatch) before the handler runs, and
it must carry the session's CSRF token (login answer "csrf_token"; header
X-CSRF-Token; see `csrf`) or it is refused (403, csrf_token_missing).
Bearer tokens need no Origin (scripts). Failed logins are throttled per
(address, username) and per address (the guard), and answered 429 with
retry_after_secs while blocked; the password is not even checked then.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import math
import re
import secrets
import time
from typing import Any

from aiohttp import web

from portunus.bounds import show
from portunus.config import ConfigError, parse_quota, parse_rule
from portunus.control import csrf, rbac
from portunus.control import grants as grants_mod
from portunus.control.api_errors import ApiError, denied
from portunus.control.passwords import hash_password, password_problem, verify_password
from portunus.control.store import ClientRow, RuleRow
from portunus.control.tenants_db import (
    ROOT_USER_ID,
    GrantRow,
    TenantStore,
    UserRow,
    owner_name,
    render_user,
)
from portunus.limits import TokenBucket

SESSION_COOKIE = "portunus_session"
# A login lasts a working day; the cookie and the stored session expire together.
SESSION_TTL_S = 12 * 3600.0
SESSION_BYTES = 32
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Five wrong passwords in a row for one (address, username), then one try every 12 s: a person
# who mistyped is back at once, a guessing script gets 300 guesses an hour (and argon2 costs each).
LOGIN_FAILURE_BURST = 5
LOGIN_FAILURES_PER_SEC = 1 / 12
MAX_LOGIN_BUCKETS = 4096
# Usernames become owner names on clients ("user:NAME", at most 128 characters).
_USERNAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")


def valid_username(v: Any) -> bool:
    return isinstance(v, str) and _USERNAME_RE.fullmatch(v) is not None


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _grant_view(g: GrantRow, iso: Any) -> dict[str, Any]:
    return {"id": g.id, "user_id": g.user_id, "username": g.username, "client": g.client,
            "listen_port_start": g.port_start, "listen_port_end": g.port_end, "protocols": list(g.protocols),
            "created_at": iso(g.created_at), "created_by": g.created_by}


def _grant(g: GrantRow) -> grants_mod.Grant:
    return grants_mod.Grant(g.client, g.port_start, g.port_end, g.protocols)


class TenantRoutes:
    """Users, sessions, grants and quotas; mixed into OperatorApi (which provides the helpers used here)."""

    store: Any
    hub: Any
    guard: Any
    metrics: Any
    settings: Any
    _body: Any
    _audited: Any
    _reader: Any
    _row_id: Any
    _client: Any
    _iso: Any

    def _init_tenants(self) -> None:
        self.tenants = TenantStore(self.store)
        self._login_buckets: collections.OrderedDict[tuple[str, str], TokenBucket] = collections.OrderedDict()

    def _add_tenant_routes(self, r: web.UrlDispatcher) -> None:
        r.add_post("/v1/auth/login", self.login)
        r.add_post("/v1/auth/logout", self._audited("auth.logout", rbac.READ, self.logout))
        r.add_get("/v1/auth/whoami", self._reader(self.whoami))
        r.add_post("/v1/users", self._audited("user.create", rbac.ADMIN, self.create_user))
        r.add_get("/v1/users", self._reader(self.list_users))
        r.add_delete("/v1/users/{id}", self._audited("user.delete", rbac.ADMIN, self.delete_user))
        r.add_put("/v1/users/{id}/password", self._audited("user.password", rbac.ADMIN, self.set_password))
        r.add_post("/v1/grants", self._audited("grant.create", rbac.ADMIN, self.create_grant))
        r.add_get("/v1/grants", self._reader(self.list_grants))
        r.add_delete("/v1/grants/{id}", self._audited("grant.delete", rbac.ADMIN, self.delete_grant))
        r.add_put("/v1/users/{id}/quotas/{client}", self._audited("quota.set", rbac.WRITE, self.set_quota))
        r.add_delete("/v1/users/{id}/quotas/{client}", self._audited("quota.delete", rbac.WRITE, self.delete_quota))
        r.add_get("/v1/users/{id}/quotas/{client}/status", self._reader(self.quota_status))
        r.add_get("/v1/quotas", self._reader(self.list_quotas))

    # ------------------------------------------------------------ who is calling

    def _session_principal(self, cookie: str) -> rbac.Principal | None:
        user = self.tenants.session_user(_sha256(cookie))
        if user is None:
            return None
        return rbac.Principal(f"user:{user.username}", "admin", user.id, user.username, user.role, via="session")

    def _token_principal(self, token_name: str, scope: str, user_id: int | None) -> rbac.Principal | None:
        user = self.tenants.user(user_id) if user_id is not None else None
        if user is None:
            return None  # its user was deleted (the token was revoked with it)
        return rbac.Principal(f"token:{token_name}", scope, user.id, user.username, user.role)

    @staticmethod
    def _own_origin(request: web.Request) -> str:
        return f"{request.scheme}://{request.host}"

    def _check_origin(self, request: web.Request, p: rbac.Principal | None) -> None:
        """Refuse a cookie-authenticated mutation (or a login) from another origin: CSRF."""
        origin = request.headers.get("Origin")
        if origin == self._own_origin(request):
            return
        why = f"Origin {show(origin)} is not this server's origin {self._own_origin(request)}" if origin else \
            "no Origin header"
        if p is not None:
            self.store.add_audit(p.actor, p.audit_role, "csrf.refused", f"{request.method} {request.path}",
                                 {"origin": origin}, "denied: csrf_origin_mismatch", reason="csrf_origin_mismatch",
                                 user_id=p.user_id)
        raise denied("csrf_origin_mismatch", f"cross-site request refused: {why} (a request authenticated by the "
                     "session cookie must come from the API's own pages; scripts use a bearer token)")

    def _require_superadmin(self, request: web.Request, what: str) -> rbac.Principal:
        p: rbac.Principal = request["principal"]
        if not p.superadmin:
            raise denied("role_required", f"only a superadmin may {what} (you are {p.username}, role {p.user_role})")
        return p

    def _user_row(self, request: web.Request) -> UserRow:
        user_id = self._row_id(request)
        user = self.tenants.user(user_id) if user_id is not None else None
        if user is None:
            raise ApiError(404, "user_not_found", f"no user with id {show(request.match_info['id'])}")
        return user

    def _self_or_superadmin(self, request: web.Request, user: UserRow, what: str) -> None:
        p: rbac.Principal = request["principal"]
        if not p.superadmin and p.user_id != user.id:
            raise denied("role_required", f"only a superadmin may {what} of another user")

    # ------------------------------------------------------------ rules: grants and ownership

    def _user_rule_body(self, request: web.Request, data: dict[str, Any]) -> None:
        """A user's rules run under their own owner (quota and shared limits): set it, refuse another."""
        p: rbac.Principal = request["principal"]
        if p.superadmin:
            return
        own = owner_name(p.username)
        if data.get("owner", own) != own:
            raise ApiError(400, "invalid", f'owner of your rules is "{own}" (set by the server); '
                           f"got {show(data.get('owner'))}")
        data["owner"] = own

    def _authorize_rule(self, request: web.Request, client: ClientRow, rule: Any) -> None:
        """A user's rule must lie inside one of their grants (superadmins are not limited)."""
        p: rbac.Principal = request["principal"]
        if p.superadmin:
            return
        user_grants = [_grant(g) for g in self.tenants.grants(p.user_id)]
        reason = grants_mod.refusal(user_grants, client.name, rule)
        if reason is not None:
            raise denied(reason, grants_mod.describe(user_grants, client.name, rule, reason))

    def _check_owner(self, request: web.Request, row: RuleRow) -> None:
        p: rbac.Principal = request["principal"]
        if not p.superadmin and row.user_id != p.user_id:
            raise denied("not_owner", f"rule {row.id} belongs to another user")

    def _visible_rules(self, request: web.Request, rows: list[RuleRow]) -> list[RuleRow]:
        p: rbac.Principal = request["principal"]
        return rows if p.superadmin else [r for r in rows if r.user_id == p.user_id]

    def _visible_clients(self, request: web.Request, clients: list[ClientRow]) -> list[ClientRow]:
        p: rbac.Principal = request["principal"]
        if p.superadmin:
            return clients
        names = {g.client for g in self.tenants.grants(p.user_id)}
        return clients if grants_mod.ANY_CLIENT in names else [c for c in clients if c.name in names]

    # ------------------------------------------------------------ login / logout

    def _login_retry_after_s(self, key: tuple[str, str]) -> float | None:
        bucket = self._login_buckets.get(key)
        if bucket is None:
            return None
        tokens = bucket.tokens()
        return None if tokens >= 1.0 else (1.0 - tokens) / LOGIN_FAILURES_PER_SEC

    def _login_failed(self, key: tuple[str, str]) -> None:
        bucket = self._login_buckets.get(key)
        if bucket is None:
            bucket = self._login_buckets[key] = TokenBucket(LOGIN_FAILURES_PER_SEC, LOGIN_FAILURE_BURST,
                                                            start_full=True)
            while len(self._login_buckets) > MAX_LOGIN_BUCKETS:
                self._login_buckets.popitem(last=False)
        self._login_buckets.move_to_end(key)
        bucket.try_take(1.0)

    @staticmethod
    def _throttled(wait_s: float, peer: str) -> ApiError:
        return ApiError(429, "too_many_failures", f"too many failed logins from {peer}; retry in "
                        f"{math.ceil(wait_s)} s", retry_after_secs=math.ceil(wait_s))

    async def login(self, request: web.Request) -> web.Response:
        peer = request.remote or "unknown"
        wait_s = self.guard.retry_after_s("http", peer)
        if wait_s is not None:
            self.metrics.auth_failures.labels("http", "throttled").inc()
            raise self._throttled(wait_s, peer)
        if "Origin" in request.headers:
            self._check_origin(request, None)  # a forged login would sign the victim in as the attacker
        data = await self._body(request)
        request["audit_detail"] = None
        username, password = data.get("username"), data.get("password")
        if set(data) - {"username", "password"} or not isinstance(username, str) or not isinstance(password, str):
            raise ApiError(400, "invalid", 'body must be {"username": string, "password": string}')
        key = (peer, username[:64])
        wait_s = self._login_retry_after_s(key)
        if wait_s is not None:
            self.metrics.auth_failures.labels("http", "throttled").inc()
            self.guard.audit(peer, "auth.login", f"user {show(username)}", "refused: throttled")
            raise self._throttled(wait_s, peer)
        user = self.tenants.user_by_name(username) if valid_username(username) else None
        stored = self.tenants.password_hash(user.id) if user is not None else None
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(None, verify_password, stored, password[:1024])
        if not ok or user is None:
            self._login_failed(key)
            self.metrics.auth_failures.labels("http", "password").inc()
            self.guard.failed("http", peer, "auth.login", f"user {show(username)}",
                              "refused: wrong username or password")
            raise ApiError(401, "unauthenticated", "wrong username or password")
        self._login_buckets.pop(key, None)
        cookie = secrets.token_urlsafe(SESSION_BYTES)
        self.tenants.add_session(user.id, _sha256(cookie), SESSION_TTL_S, peer)
        self.store.add_audit(f"user:{user.username}", user.role, "auth.login", f"user {user.username}",
                             {"peer": peer}, "ok", user_id=user.id)
        resp = web.json_response({"user": render_user(user, self._iso),
                                  "expires_at": self._iso(time.time() + SESSION_TTL_S),
                                  "csrf_token": csrf.token_for(cookie)})
        resp.set_cookie(SESSION_COOKIE, cookie, max_age=int(SESSION_TTL_S), path="/", httponly=True,
                        samesite="Strict", secure=request.secure or None)
        return resp

    async def logout(self, request: web.Request) -> web.Response:
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            self.tenants.delete_session(_sha256(cookie))
        resp = web.json_response({"status": "logged_out"})
        resp.del_cookie(SESSION_COOKIE, path="/")
        return resp

    async def whoami(self, request: web.Request) -> web.Response:
        p: rbac.Principal = request["principal"]
        return web.json_response({"actor": p.actor, "user_id": p.user_id, "username": p.username,
                                  "role": p.user_role, "scope": p.role, "via": p.via})

    # ------------------------------------------------------------ users

    async def create_user(self, request: web.Request) -> web.Response:
        p = self._require_superadmin(request, "create users")
        data = await self._body(request)
        request["audit_detail"] = {k: v for k, v in data.items() if k != "password"}
        username, role, password = data.get("username"), data.get("role", "user"), data.get("password")
        problems = [f"{k}: unknown key (allowed: username, password, role)" for k in data
                    if k not in ("username", "password", "role")]
        if not valid_username(username):
            problems.append(f"username must be 1-63 chars of letters, digits, '_.-' (got {show(username)})")
        if role not in rbac.USER_ROLES:
            problems.append(f"role must be one of {', '.join(rbac.USER_ROLES)} (got {show(role)})")
        problem = password_problem(password)
        if problem is not None:
            problems.append(problem)
        if problems:
            raise ApiError(400, "invalid", "; ".join(problems), problems=problems)
        request["audit_target"] = f"user {username} ({role})"
        if self.tenants.user_by_name(username) is not None:
            raise ApiError(409, "duplicate_name", f'a user named "{username}" exists')
        hashed = await asyncio.get_running_loop().run_in_executor(None, hash_password, password)
        user = self.tenants.add_user(username, role, hashed, p.actor)
        return web.json_response(render_user(user, self._iso), status=201)

    async def list_users(self, request: web.Request) -> web.Response:
        p: rbac.Principal = request["principal"]
        users = self.tenants.list_users() if p.superadmin else [u for u in self.tenants.list_users()
                                                                if u.id == p.user_id]
        return web.json_response({"users": [render_user(u, self._iso) for u in users]})

    async def delete_user(self, request: web.Request) -> web.Response:
        p = self._require_superadmin(request, "delete users")
        user = self._user_row(request)
        request["audit_target"] = f"user {user.username}"
        if user.id in (ROOT_USER_ID, p.user_id):
            raise ApiError(409, "cannot_delete", "root and your own user cannot be deleted")
        n = self.tenants.rule_count(user.id)
        if n:
            raise ApiError(409, "user_has_rules", f'user "{user.username}" owns {n} rule(s); delete them first')
        self.tenants.delete_user(user.id)
        return web.json_response({"id": user.id, "status": "deleted"})

    async def set_password(self, request: web.Request) -> web.Response:
        user = self._user_row(request)
        request["audit_target"] = f"user {user.username}"
        self._self_or_superadmin(request, user, "set the password")
        data = await self._body(request)
        request["audit_detail"] = None
        problem = password_problem(data.get("password")) if set(data) == {"password"} else \
            'body must be {"password": string}'
        if problem is not None:
            raise ApiError(400, "invalid", problem)
        hashed = await asyncio.get_running_loop().run_in_executor(None, hash_password, data["password"])
        self.tenants.set_password_hash(user.id, hashed)
        return web.json_response({"id": user.id, "status": "password_set"})

    # ------------------------------------------------------------ grants

    async def create_grant(self, request: web.Request) -> web.Response:
        p = self._require_superadmin(request, "create grants")
        data = await self._body(request)
        try:
            user_id, grant = grants_mod.parse_grant(data)
        except grants_mod.GrantError as e:
            raise ApiError(400, "invalid", "; ".join(e.problems), problems=e.problems) from None
        user = self.tenants.user(user_id)
        if user is None:
            raise ApiError(404, "user_not_found", f"no user with id {user_id}")
        request["audit_target"] = (f"grant to {user.username}: {grant.client} {grant.port_start}-{grant.port_end} "
                                   f"{'/'.join(grant.protocols)}")
        row = self.tenants.add_grant(user.id, grant.client, grant.port_start, grant.port_end, grant.protocols,
                                     p.actor)
        return web.json_response(_grant_view(row, self._iso), status=201)

    async def list_grants(self, request: web.Request) -> web.Response:
        p: rbac.Principal = request["principal"]
        user_id = p.user_id if not p.superadmin else None
        if p.superadmin and "user_id" in request.query:
            raw = request.query["user_id"]
            user_id = int(raw) if re.fullmatch(r"[0-9]{1,18}", raw) else -1
        return web.json_response({"grants": [_grant_view(g, self._iso) for g in self.tenants.grants(user_id)]})

    async def delete_grant(self, request: web.Request) -> web.Response:
        self._require_superadmin(request, "delete grants")
        grant_id = self._row_id(request)
        row = self.tenants.grant(grant_id) if grant_id is not None else None
        if row is None:
            raise ApiError(404, "grant_not_found", f"no grant with id {show(request.match_info['id'])}")
        request["audit_target"] = f"grant {row.id} of {row.username}"
        stranded = self._rules_only_this_grant_covers(row)
        if stranded:
            raise ApiError(409, "grant_in_use", f"grant {row.id} is the only grant of {row.username} covering their "
                           f"rule(s) {', '.join(map(str, stranded))}; delete those rules (or grant their ports "
                           "again) first", rule_ids=stranded)
        self.tenants.delete_grant(row.id)
        return web.json_response({"id": row.id, "status": "deleted"})

    def _rules_only_this_grant_covers(self, row: GrantRow) -> list[int]:
        """Ids of the user's rules no other grant of theirs allows (a user's rules stay inside their grants)."""
        user = self.tenants.user(row.user_id)
        if user is None or user.role == "superadmin":
            return []
        others = [_grant(g) for g in self.tenants.grants(row.user_id) if g.id != row.id]
        stranded = []
        for rule_row in self.store.list_rules():
            if rule_row.user_id != row.user_id or not _grant(row).covers_client(rule_row.client):
                continue
            try:
                rule = parse_rule(rule_row.spec, source=f"stored rule {rule_row.id}")
            except ConfigError:
                continue  # stored by an older server; its client refuses it anyway
            if grants_mod.refusal(others, rule_row.client, rule) is not None:
                stranded.append(rule_row.id)
        return stranded

    # ------------------------------------------------------------ quotas

    def _quota_target(self, request: web.Request) -> tuple[UserRow, ClientRow]:
        user = self._user_row(request)
        client = self._client(request.match_info["client"])
        request["audit_target"] = f"quota of user {user.username} on client {client.name}"
        return user, client

    async def set_quota(self, request: web.Request) -> web.Response:
        self._require_superadmin(request, "set quotas")
        user, client = self._quota_target(request)
        data = await self._body(request)
        try:
            spec = parse_quota(data, source="request body")
        except ConfigError as e:
            raise ApiError(400, "invalid_quota", "; ".join(e.problems), problems=e.problems) from None
        row = self.hub.ledger.set(user.id, client.id, spec)
        version = self.hub.push_quota(client.id, client.name, row.owner, row)
        acked = None
        if self.hub.is_online(client.id):
            acked = await self.hub.wait_ack(client.id, version, self.settings.ack_timeout_secs)
        return web.json_response({**self.hub.ledger.status(row), "client_acked": acked is not None})

    async def delete_quota(self, request: web.Request) -> web.Response:
        self._require_superadmin(request, "delete quotas")
        user, client = self._quota_target(request)
        if self.tenants.quota(user.id, client.id) is None:
            raise ApiError(404, "quota_not_found", f'user "{user.username}" has no quota on client "{client.name}"')
        self.tenants.delete_quota(user.id, client.id)
        self.hub.push_quota(client.id, client.name, owner_name(user.username), None)
        return web.json_response({"user_id": user.id, "client": client.name, "status": "deleted"})

    async def quota_status(self, request: web.Request) -> web.Response:
        user, client = self._quota_target(request)
        self._self_or_superadmin(request, user, "read the quota")
        row = self.tenants.quota(user.id, client.id)
        if row is None:
            raise ApiError(404, "quota_not_found", f'user "{user.username}" has no quota on client "{client.name}"')
        return web.json_response(self.hub.ledger.status(row))

    async def list_quotas(self, request: web.Request) -> web.Response:
        p: rbac.Principal = request["principal"]
        rows = [r for r in self.tenants.quotas() if p.superadmin or r.user_id == p.user_id]
        return web.json_response({"quotas": [self.hub.ledger.status(r) for r in rows]})
