"""Users, grants, sessions and their refusals, against a real server with two real clients.

The superadmin is the server.toml operator_token (root). Users are made
through the API; their rules go to real portunus-client processes and carry
real traffic.
"""

from __future__ import annotations

import http.client
import json
import random
import secrets
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest

from portunus.control import csrf
from portunus.control.rbac import token_hash
from portunus.control.store import _MIGRATIONS
from portunus.control.tenants_api import LOGIN_FAILURE_BURST
from tests.portunus.control.support import ControlPlane, new_plane, remove_plane, through
from tests.support.net import ExchangeServer, free_port_range
from tests.support.proc import run_cli

PASSWORD = "correct horse battery staple"


class Http:
    """Requests with any headers (cookies, Origin); returns (status, headers, JSON body)."""

    def __init__(self, endpoint: str) -> None:
        self.host, port = endpoint.rsplit(":", 1)
        self.port = int(port)
        self.origin = f"http://{endpoint}"

    def __call__(self, method: str, path: str, body: Any = None, *, token: str | None = None,
                 cookie: str | None = None, origin: str | None = None) -> tuple[int, http.client.HTTPMessage, Any]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=60)
        headers = {"Content-Type": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if cookie:
            headers["Cookie"] = cookie
            headers[csrf.HEADER] = csrf.token_for(cookie.split("=", 1)[1])  # what the UI sends
        if origin:
            headers["Origin"] = origin
        try:
            conn.request(method, path, json.dumps(body) if body is not None else None, headers)
            resp = conn.getresponse()
            raw = resp.read()
            return resp.status, resp.headers, json.loads(raw) if raw else None
        finally:
            conn.close()


@pytest.fixture(scope="module")
def fleet() -> Iterator[ControlPlane]:
    """A server with two enrolled, connected clients: edge-a and edge-b."""
    p = new_plane()
    try:
        p.start_server()
        for name in ("edge-a", "edge-b"):
            p.start_client(p.enroll(name))
            p.wait_online(name)
        yield p
    finally:
        remove_plane(p)


def make_user(plane: ControlPlane, name: str, role: str = "user") -> int:
    resp = plane.api().post("/v1/users", {"username": name, "password": PASSWORD, "role": role})
    assert resp.status == 201, resp
    return int(resp.body["id"])


def user_token(plane: ControlPlane, name: str) -> str:
    """Log in as `name` (cookie) and create a bearer token for scripts, as a user would."""
    h = Http(plane.http_endpoint)
    status, headers, body = h("POST", "/v1/auth/login", {"username": name, "password": PASSWORD})
    assert status == 200, body
    cookie = headers["Set-Cookie"].split(";")[0]
    status, _, body = h("POST", "/v1/tokens", {"name": f"{name}-script", "role": "admin"}, cookie=cookie,
                        origin=h.origin)
    assert status == 201, body
    return str(body["token"])


def grant(plane: ControlPlane, user_id: int, client: str, start: int, end: int, protocols: list[str]) -> int:
    resp = plane.api().post("/v1/grants", {"user_id": user_id, "client": client, "listen_port_start": start,
                                           "listen_port_end": end, "protocols": protocols})
    assert resp.status == 201, resp
    return int(resp.body["id"])


def rule(client: str, name: str, port: int, target: int, protocol: str = "tcp") -> dict[str, Any]:
    return {"client": client, "name": name, "protocol": protocol, "listen_addr": "127.0.0.1",
            "listen_port": port, "target": f"127.0.0.1:{target}"}


def forbidden(resp: Any, reason: str) -> None:
    assert resp.status == 403, resp
    assert resp.error["code"] == "forbidden" and resp.error["reason"] == reason, resp


def test_grants_decide_what_a_user_may_push(fleet: ControlPlane) -> None:
    base = free_port_range(100)  # "20000-20099": a range free on this host
    alice_id, bob_id = make_user(fleet, "alice"), make_user(fleet, "bob")
    alice_grant = grant(fleet, alice_id, "edge-a", base, base + 99, ["tcp"])
    grant(fleet, bob_id, "edge-a", base + 50, base + 99, ["tcp", "udp"])
    alice, bob = fleet.api(user_token(fleet, "alice")), fleet.api(user_token(fleet, "bob"))
    target = ExchangeServer(lambda tag: 2048, random.Random(5))
    try:
        # Inside the grant: created, active on the client, and it forwards.
        resp = alice.post("/v1/rules", rule("edge-a", "web", base + 10, target.port))
        assert resp.status == 201 and resp.body["status"] == "active", resp
        rule_id = resp.body["id"]
        through(base + 10, target, b"alice-0000000001")
        stored = fleet.api().get(f"/v1/rules/{rule_id}").body
        assert stored["rule"]["owner"] == "user:alice", stored  # her quota and limits apply to it

        # Outside: each refusal names what the grants do not allow.
        forbidden(alice.post("/v1/rules", rule("edge-a", "far", base + 100, target.port)), "port_outside_grant")
        span = {k: v for k, v in rule("edge-a", "span", 0, target.port).items() if k != "listen_port"}
        forbidden(alice.post("/v1/rules", span | {"listen_ports": f"{base + 90}-{base + 110}"}), "port_outside_grant")
        forbidden(alice.post("/v1/rules", rule("edge-a", "dns", base + 11, target.port, "udp")), "protocol_not_granted")
        forbidden(alice.post("/v1/rules", rule("edge-b", "other", base + 12, target.port)), "client_not_granted")
        assert alice.post("/v1/rules", rule("edge-a", "x", base + 13, target.port) | {"owner": "bob"}).status == 400

        # Bob neither sees nor changes alice's rule; he may not even read it.
        assert [r["id"] for r in bob.get("/v1/rules").body["rules"]] == []
        forbidden(bob.get(f"/v1/rules/{rule_id}"), "not_owner")
        forbidden(bob.delete(f"/v1/rules/{rule_id}"), "not_owner")
        forbidden(bob.put(f"/v1/rules/{rule_id}", rule("edge-a", "web", base + 60, target.port)), "not_owner")
        # Nor may users do a superadmin's work.
        forbidden(bob.post("/v1/users", {"username": "eve", "password": PASSWORD}), "role_required")
        forbidden(bob.post("/v1/grants", {"user_id": bob_id, "client": "*", "listen_port_start": 1,
                                          "listen_port_end": 65535, "protocols": ["tcp"]}), "role_required")
        forbidden(bob.post("/v1/client-enrollments", {"name": "x", "address": "h"}), "role_required")
        forbidden(bob.put("/v1/clients/edge-a/owners/user:bob/rate-limit", {"bandwidth_in_bps": 10}),
                  "role_required")
        assert [c["name"] for c in bob.get("/v1/clients").body["clients"]] == ["edge-a"]
        assert [g["user_id"] for g in bob.get("/v1/grants").body["grants"]] == [bob_id]

        # Alice changes her rule within her grant, and not beyond it.
        assert alice.put(f"/v1/rules/{rule_id}", rule("edge-a", "web", base + 20, target.port)).status == 200
        through(base + 20, target, b"alice-0000000002")
        forbidden(alice.put(f"/v1/rules/{rule_id}", rule("edge-a", "web", base + 200, target.port)),
                  "port_outside_grant")

        # Her grant is not taken away from under her running rule, unless another grant covers it.
        admin = fleet.api()
        resp = admin.delete(f"/v1/grants/{alice_grant}")
        assert resp.status == 409 and resp.error["code"] == "grant_in_use" and resp.error["rule_ids"] == [rule_id], resp
        wider = grant(fleet, alice_id, "*", base + 20, base + 20, ["tcp"])
        assert admin.delete(f"/v1/grants/{alice_grant}").status == 200
        assert admin.delete(f"/v1/grants/{wider}").error["rule_ids"] == [rule_id]  # now the only one
        forbidden(alice.put(f"/v1/rules/{rule_id}", rule("edge-a", "web", base + 10, target.port)), "port_outside_grant")

        # The superadmin sees every rule and may delete any of them.
        assert rule_id in [r["id"] for r in admin.get("/v1/rules").body["rules"]]
        assert alice.get("/v1/rules").body["rules"][0]["id"] == rule_id
        assert admin.delete(f"/v1/rules/{rule_id}").status == 200
        assert alice.get("/v1/rules").body["rules"] == []
        assert admin.delete(f"/v1/grants/{wider}").status == 200
        assert alice.get("/v1/grants").body["grants"] == []

        # Every denial is in the audit log with actor, role and reason; users read only their own entries.
        entries = admin.get("/v1/audit?limit=1000").body["entries"]
        denials = {(e["actor"], e["role"], e["action"], e["reason"]) for e in entries
                   if e["result"].startswith("denied")}
        assert {("token:alice-script", "user", "rule.create", "port_outside_grant"),
                ("token:alice-script", "user", "rule.create", "protocol_not_granted"),
                ("token:alice-script", "user", "rule.create", "client_not_granted"),
                ("token:bob-script", "user", "rule.delete", "not_owner"),
                ("token:bob-script", "user", "read /v1/rules/{id}", "not_owner"),
                ("token:bob-script", "user", "user.create", "role_required")} <= denials
        assert ("token:alice-script", "user", "rule.create", None) in {
            (e["actor"], e["role"], e["action"], e["reason"]) for e in entries if e["result"] == "ok"}
        mine = alice.get("/v1/audit?limit=1000").body["entries"]
        assert mine and {e["actor"] for e in mine} <= {"token:alice-script", "user:alice"}
    finally:
        target.close()


def test_cookie_login_logout_and_csrf(fleet: ControlPlane) -> None:
    base = free_port_range(10)
    uid = make_user(fleet, "carol")
    grant(fleet, uid, "*", base, base + 9, ["tcp", "udp"])
    h = Http(fleet.http_endpoint)
    status, headers, body = h("POST", "/v1/auth/login", {"username": "carol", "password": PASSWORD})
    assert status == 200 and body["user"]["username"] == "carol", body
    set_cookie = headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Path=/" in set_cookie, set_cookie
    cookie = set_cookie.split(";")[0]
    assert h("GET", "/v1/auth/whoami", cookie=cookie)[2] == {
        "actor": "user:carol", "user_id": uid, "username": "carol", "role": "user", "scope": "admin", "via": "session"}
    assert h("GET", "/v1/rules", cookie=cookie)[0] == 200  # reads need no Origin

    # A mutation carried by the cookie must come from the API's own origin.
    body_ = rule("edge-b", "c1", base, 9)
    for origin in (None, "http://evil.example", f"http://127.0.0.1:{fleet.http_port + 1}"):
        status, _, err = h("POST", "/v1/rules?wait=false", body_, cookie=cookie, origin=origin)
        assert status == 403 and err["error"]["reason"] == "csrf_origin_mismatch", (origin, err)
    status, _, created = h("POST", "/v1/rules", body_, cookie=cookie, origin=h.origin)
    assert status == 201, created
    # A bearer token needs no Origin (scripts); a forged login from another site is refused too.
    assert h("POST", "/v1/auth/login", {"username": "carol", "password": PASSWORD},
             origin="http://evil.example")[0] == 403
    refused = [e for e in fleet.api().get("/v1/audit?limit=1000").body["entries"] if e["action"] == "csrf.refused"]
    assert len(refused) == 3 and all(e["actor"] == "user:carol" for e in refused)

    # Logout ends the session on the server, not just in the browser.
    status, headers, _ = h("POST", "/v1/auth/logout", cookie=cookie, origin=h.origin)
    assert status == 200 and "Max-Age=0" in headers["Set-Cookie"]
    status, _, err = h("GET", "/v1/rules", cookie=cookie)
    assert status == 401 and "session expired or logged out" in err["error"]["message"]
    assert fleet.api().delete(f"/v1/rules/{created['id']}").status == 200


def test_wrong_password_is_401_then_throttled(fleet: ControlPlane) -> None:
    make_user(fleet, "dave")
    h = Http(fleet.http_endpoint)
    statuses = [h("POST", "/v1/auth/login", {"username": "dave", "password": "wrong password!"})[0]
                for _ in range(LOGIN_FAILURE_BURST)]
    assert statuses == [401] * LOGIN_FAILURE_BURST
    # Blocked now: even the right password is not checked.
    status, _, body = h("POST", "/v1/auth/login", {"username": "dave", "password": PASSWORD})
    assert status == 429 and body["error"]["code"] == "too_many_failures", body
    assert body["error"]["retry_after_secs"] >= 1
    # An unknown name answers like a wrong password; other users still log in from this address.
    assert h("POST", "/v1/auth/login", {"username": "nobody", "password": PASSWORD})[0] == 401
    make_user(fleet, "erin")
    assert h("POST", "/v1/auth/login", {"username": "erin", "password": PASSWORD})[0] == 200
    entries = fleet.api().get("/v1/audit?limit=1000").body["entries"]
    logins = [e for e in entries if e["action"] == "auth.login"]
    assert any(e["result"] == "refused: wrong username or password" and e["target"] == "user 'dave'" for e in logins)
    assert any(e["result"] == "refused: throttled" for e in logins)
    assert any(e["result"] == "ok" and e["actor"] == "user:erin" for e in logins)
    assert 'portunus_server_auth_failures_total{reason="password",surface="http"}' in fleet.metrics()


def test_users_and_grants_through_the_cli(fleet: ControlPlane) -> None:
    env = {"PORTUNUS_OPERATOR_TOKEN": fleet.token}
    ep = ["--http-endpoint", fleet.http_endpoint]
    r = run_cli("portunus-server", "users", "add", "frank", "--password-stdin", *ep, input=PASSWORD + "\n", env=env)
    assert r.returncode == 0, r.stderr
    uid = int(r.stdout)
    r = run_cli("portunus-server", "grants", "add", "frank", "edge-a", "21000-21009", "--protocols", "udp", *ep, env=env)
    assert r.returncode == 0, r.stderr
    grant_id = int(r.stdout)
    listed = json.loads(run_cli("portunus-server", "grants", "list", "--user", "frank", *ep, env=env).stdout)
    assert [(g["id"], g["user_id"], g["client"], g["listen_port_start"], g["listen_port_end"], g["protocols"])
            for g in listed] == [(grant_id, uid, "edge-a", 21000, 21009, ["udp"])]
    users = json.loads(run_cli("portunus-server", "users", "list", *ep, env=env).stdout)
    assert {"root", "frank"} <= {u["username"] for u in users}
    assert next(u for u in users if u["username"] == "root")["role"] == "superadmin"
    r = run_cli("portunus-server", "users", "add", "x", "--password-stdin", *ep, input="short\n", env=env)
    assert r.returncode == 1 and "password must be 12 to 1024 characters" in r.stderr
    # frank cannot grant himself more (his token is refused with the reason).
    frank = user_token(fleet, "frank")
    r = run_cli("portunus-server", "grants", "add", "frank", "*", "1-65535", *ep, env={"PORTUNUS_OPERATOR_TOKEN": frank})
    assert r.returncode == 1 and "HTTP 403 forbidden" in r.stderr and "only a superadmin" in r.stderr
    assert run_cli("portunus-server", "grants", "delete", str(grant_id), *ep, env=env).returncode == 0
    assert run_cli("portunus-server", "users", "delete", "frank", *ep, env=env).returncode == 0
    assert fleet.api(frank).get("/v1/rules").status == 401  # his tokens went with him


def test_a_schema_2_data_dir_keeps_its_tokens_scopes() -> None:
    """A state.db of the three-role server, opened by this one: the tokens act as root within their old role."""
    p = new_plane()
    try:
        db = sqlite3.connect(p.data_dir / "state.db")
        db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        for version in (1, 2):
            for stmt in _MIGRATIONS[version]:
                db.execute(stmt)
        db.execute("INSERT INTO meta VALUES ('schema_version', '2')")
        db.execute("INSERT INTO clients (name, address, created_at) VALUES ('edge', '127.0.0.1', 0)")
        spec = json.dumps(rule("edge", "old", 20000, 9))
        db.execute("INSERT INTO rules (client_id, name, spec_json, created_at, updated_at) VALUES (1, 'old', ?, 0, 0)",
                   (spec,))
        tokens = {role: secrets.token_urlsafe(32) for role in ("admin", "operator", "viewer")}
        for role, token in tokens.items():
            db.execute("INSERT INTO tokens (name, role, token_sha256, created_at, created_by) VALUES (?, ?, ?, 0, 'op')",
                       (f"old-{role}", role, token_hash(token)))
        db.commit()
        db.close()
        p.start_server()
        viewer, operator, admin = (p.api(tokens[r]) for r in ("viewer", "operator", "admin"))
        assert viewer.get("/v1/auth/whoami").body == {"actor": "token:old-viewer", "user_id": 1, "username": "root",
                                                      "role": "superadmin", "scope": "viewer", "via": "token"}
        assert [r["name"] for r in viewer.get("/v1/rules").body["rules"]] == ["old"]  # root owns the old rules
        forbidden(viewer.post("/v1/client-enrollments", {"name": "edge-2", "address": "127.0.0.1"}), "role_required")
        assert operator.post("/v1/client-enrollments", {"name": "edge-2", "address": "127.0.0.1"}).status == 201
        forbidden(operator.post("/v1/users", {"username": "x", "password": PASSWORD}), "role_required")
        assert admin.post("/v1/users", {"username": "x", "password": PASSWORD}).status == 201
        assert {(t["name"], t["role"], t["user_id"]) for t in admin.get("/v1/tokens").body["tokens"]} == {
            ("old-admin", "admin", 1), ("old-operator", "operator", 1), ("old-viewer", "viewer", 1)}
        assert p.server is not None and "(schema 3)" in p.server.log()
    finally:
        remove_plane(p)
