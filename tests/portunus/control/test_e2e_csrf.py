"""CSRF tokens on cookie sessions and the UI's session probe, against a real server (no browser)."""

from __future__ import annotations

import http.client
import json
from typing import Any

from tests.portunus.control.support import ControlPlane

PASSWORD = "csrf test password"


def call(plane: ControlPlane, method: str, path: str, body: Any = None,
         headers: dict[str, str] | None = None) -> tuple[int, Any, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", plane.http_port, timeout=60)
    try:
        conn.request(method, path, json.dumps(body) if body is not None else None,
                     {"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, resp.headers, json.loads(raw) if raw else None
    finally:
        conn.close()


def test_cookie_changes_need_the_sessions_csrf_token(plane: ControlPlane) -> None:
    assert plane.api().post("/v1/users", {"username": "erin", "password": PASSWORD}).status == 201
    assert call(plane, "GET", "/v1/auth/session")[2] == {"authenticated": False}
    status, headers, body = call(plane, "POST", "/v1/auth/login", {"username": "erin", "password": PASSWORD})
    assert status == 200, body
    token = body["csrf_token"]
    cookie = headers["Set-Cookie"].split(";")[0]
    origin = f"http://{plane.http_endpoint}"
    status, _, session = call(plane, "GET", "/v1/auth/session", headers={"Cookie": cookie})
    assert status == 200 and session["authenticated"] and session["user"]["username"] == "erin"
    assert session["csrf_token"] == token

    make = {"name": "erin-ci", "role": "admin"}
    for given, reason in ((None, "csrf_token_missing"), ("f" * 64, "csrf_token_mismatch"),
                          (token[:-1], "csrf_token_mismatch")):
        hdrs = {"Cookie": cookie, "Origin": origin, **({"X-CSRF-Token": given} if given else {})}
        status, _, err = call(plane, "POST", "/v1/tokens", make, hdrs)
        assert status == 403 and err["error"]["reason"] == reason, (given, err)
    # Another session's token does not fit this cookie.
    other = call(plane, "POST", "/v1/auth/login", {"username": "erin", "password": PASSWORD})[2]["csrf_token"]
    assert other != token
    status, _, err = call(plane, "POST", "/v1/tokens", make, {"Cookie": cookie, "Origin": origin, "X-CSRF-Token": other})
    assert status == 403 and err["error"]["reason"] == "csrf_token_mismatch"
    # Reads need no token; the right token lets the change through.
    assert call(plane, "GET", "/v1/tokens", headers={"Cookie": cookie})[0] == 200
    status, _, created = call(plane, "POST", "/v1/tokens", make, {"Cookie": cookie, "Origin": origin,
                                                                  "X-CSRF-Token": token})
    assert status == 201, created
    # A bearer token needs neither Origin nor CSRF token (scripts).
    status, _, _ = call(plane, "POST", "/v1/tokens", {"name": "erin-2", "role": "viewer"},
                        {"Authorization": f"Bearer {created['token']}"})
    assert status == 201
    refusals = [e for e in plane.api().get("/v1/audit?limit=100").body["entries"] if e["action"] == "csrf.refused"]
    assert sorted(e["reason"] for e in refusals) == ["csrf_token_mismatch"] * 3 + ["csrf_token_missing"]
    assert all(e["actor"] == "user:erin" for e in refusals)
    # Logging out is a change too: without the token the session stays.
    assert call(plane, "POST", "/v1/auth/logout", headers={"Cookie": cookie, "Origin": origin})[0] == 403
    assert call(plane, "GET", "/v1/auth/session", headers={"Cookie": cookie})[2]["authenticated"] is True
    assert call(plane, "POST", "/v1/auth/logout", headers={"Cookie": cookie, "Origin": origin,
                                                           "X-CSRF-Token": token})[0] == 200
    assert call(plane, "GET", "/v1/auth/session", headers={"Cookie": cookie})[2] == {"authenticated": False}
