"""Who may do what: bearer tokens, roles, audit, one-time enrollment, certificate pinning.

Real server process, real TLS, real SQLite file.
"""

from __future__ import annotations

import re

from tests.portunus.control.support import ControlPlane
from tests.support.net import free_port
from tests.support.proc import run_cli


def test_missing_or_wrong_token_is_401(plane: ControlPlane) -> None:
    for token in ("", "not-the-token-at-all"):
        for method, path in (("GET", "/v1/rules"), ("POST", "/v1/rules"), ("GET", "/v1/audit"),
                             ("POST", "/v1/client-enrollments")):
            resp = plane.api(token).request(method, path, {} if method == "POST" else None)
            assert resp.status == 401, (token, method, path, resp)
            assert resp.error["code"] == "unauthenticated"
    assert 'portunus_server_auth_failures_total{reason="missing",surface="http"} 4.0' in plane.metrics()
    assert 'portunus_server_auth_failures_total{reason="invalid",surface="http"} 4.0' in plane.metrics()
    # push-rule says so too, and exits 1.
    r = run_cli("portunus-server", "push-rule", "edge", "9000", "127.0.0.1:9", "--http-endpoint",
                plane.http_endpoint, "--token", "wrong-token-wrong-token")
    assert r.returncode == 1 and "HTTP 401 unauthenticated" in r.stderr


def test_roles(plane: ControlPlane) -> None:
    admin = plane.api()
    tokens = {}
    for role in ("viewer", "operator"):
        resp = admin.post("/v1/tokens", {"name": f"{role}-1", "role": role})
        assert resp.status == 201, resp
        tokens[role] = resp.body["token"]
    viewer, operator = plane.api(tokens["viewer"]), plane.api(tokens["operator"])
    uri = plane.enrollment_uri("edge")
    assert uri.startswith("portunus://")

    # A viewer reads but cannot change anything.
    assert viewer.get("/v1/rules").status == 200
    assert viewer.get("/v1/clients").status == 200
    assert viewer.get("/v1/audit").status == 200
    rule = {"client": "edge", "name": "r1", "listen_port": free_port(), "target": "127.0.0.1:9"}
    for resp in (viewer.post("/v1/rules", rule),
                 viewer.post("/v1/client-enrollments", {"name": "x", "address": "127.0.0.1"}),
                 viewer.put("/v1/clients/edge/owners/o/rate-limit", {"bandwidth_in_bps": 10}),
                 viewer.delete("/v1/rules/1"),
                 viewer.post("/v1/tokens", {"name": "sneaky", "role": "admin"}),
                 viewer.get("/v1/tokens")):
        assert resp.status == 403, resp
        assert resp.error["code"] == "forbidden"
    r = run_cli("portunus-server", "push-rule", "edge", "9000", "127.0.0.1:9", "--http-endpoint",
                plane.http_endpoint, env={"PORTUNUS_OPERATOR_TOKEN": tokens["viewer"]})
    assert r.returncode == 1 and "HTTP 403 forbidden" in r.stderr

    # An operator changes rules (the client is offline: stored, 202 without waiting) but not tokens.
    resp = operator.post("/v1/rules?wait=false", rule)
    assert resp.status == 202 and resp.body["status"] == "pending", resp
    assert operator.post("/v1/tokens", {"name": "t", "role": "viewer"}).status == 403

    # A revoked token is 401 from then on.
    tid = next(t["id"] for t in admin.get("/v1/tokens").body["tokens"] if t["name"] == "operator-1")
    assert admin.delete(f"/v1/tokens/{tid}").status == 200
    assert operator.get("/v1/rules").status == 401

    # Every change and every refused change is in the audit log: who, what, when, result.
    entries = admin.get("/v1/audit?limit=100").body["entries"]
    denied = [e for e in entries if e["actor"] == "token:viewer-1" and e["result"].startswith("denied")]
    assert {e["action"] for e in denied} >= {"rule.create", "enrollment.create", "owner.rate_limit.set",
                                            "rule.delete", "token.create"}
    ok = [e for e in entries if e["result"] == "ok"]
    assert ("token:operator-1", "rule.create") in {(e["actor"], e["action"]) for e in ok}
    assert ("operator_token", "token.revoke") in {(e["actor"], e["action"]) for e in ok}
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", e["ts"]) for e in entries)
    assert not any("token" in (e["detail"] or {}) for e in entries), "a token secret leaked into the audit log"


def test_enrollment_uri_is_single_use(plane: ControlPlane) -> None:
    uri = plane.enrollment_uri("edge")
    first = run_cli("portunus-client", "enroll", uri, "--out", str(plane.root / "a.json"))
    assert first.returncode == 0, first.stderr
    again = run_cli("portunus-client", "enroll", uri, "--out", str(plane.root / "b.json"))
    assert again.returncode == 1
    assert "already used" in again.stderr
    assert not (plane.root / "b.json").exists()
    # An enrolled client name cannot be enrolled again.
    resp = plane.api().post("/v1/client-enrollments", {"name": "edge", "address": "127.0.0.1"})
    assert resp.status == 409


def test_expired_enrollment_uri_is_refused(plane: ControlPlane) -> None:
    resp = plane.api().post("/v1/client-enrollments", {"name": "late", "address": "127.0.0.1", "ttl_secs": 0.001})
    assert resp.status == 201
    r = run_cli("portunus-client", "enroll", resp.body["uri"], "--out", str(plane.root / "late.json"))
    assert r.returncode == 1 and "expired" in r.stderr


def test_fingerprint_mismatch_is_refused(plane: ControlPlane) -> None:
    uri = plane.enrollment_uri("edge")
    fp = re.search(r"fp=sha256%3A([0-9a-f]{64})", uri)
    assert fp is not None
    wrong = uri.replace(fp.group(1), ("0" if fp.group(1)[0] != "0" else "1") + fp.group(1)[1:])
    r = run_cli("portunus-client", "enroll", wrong, "--out", str(plane.root / "x.json"))
    assert r.returncode == 1
    assert "fingerprint mismatch" in r.stderr and fp.group(1) in r.stderr
    assert not (plane.root / "x.json").exists()
    # Nothing was sent to the server: the secret is still good with the right pin.
    ok = run_cli("portunus-client", "enroll", uri, "--out", str(plane.root / "y.json"))
    assert ok.returncode == 0, ok.stderr


def test_create_enrollment_and_push_rule_clis(plane: ControlPlane) -> None:
    env = {"PORTUNUS_OPERATOR_TOKEN": plane.token}
    r = run_cli("portunus-server", "create-enrollment", "edge", "127.0.0.1", "--http-endpoint",
                plane.http_endpoint, env=env)
    assert r.returncode == 0 and r.stdout.startswith("portunus://"), r.stderr
    bundle = plane.root / "edge.json"
    assert run_cli("portunus-client", "enroll", r.stdout.strip(), "--out", str(bundle)).returncode == 0
    assert oct(bundle.stat().st_mode & 0o777) == "0o600"
    plane.start_client(bundle)
    plane.wait_online("edge")
    port = free_port()
    r = run_cli("portunus-server", "push-rule", "edge", str(port), "127.0.0.1:9", "--bandwidth-in-bps", "1000000",
                "--http-endpoint", plane.http_endpoint, env=env)
    assert r.returncode == 0, r.stderr
    rule = plane.api().get(f"/v1/rules/{int(r.stdout)}").body
    assert rule["status"] == "active" and rule["name"] == f"port-{port}"
    assert rule["rule"]["rate_limit"] == {"bandwidth_in_bps": 1000000}
    r = run_cli("portunus-server", "push-rule", "edge", str(port), "127.0.0.1:9", "--http-endpoint",
                plane.http_endpoint)
    assert r.returncode == 2 and "PORTUNUS_OPERATOR_TOKEN" in r.stderr
