"""What unauthenticated callers may cost the server (issue 15 item 4): an Enroll flood or a
token-guessing loop is throttled per address and audited at a bounded rate, and a short
operator token is refused. Real server process, real TLS, real SQLite file."""

from __future__ import annotations

import http.client
import json
import time
from typing import Any

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from portunus.control import wire
from portunus.control.guard import AUDIT_BURST, AUDIT_PER_SEC, FAILURE_BURST, FAILURES_PER_SEC
from portunus.control.pki import TLS_NAME, public_key_b64
from tests.portunus.control.support import ControlPlane, new_plane, remove_plane, wait_until
from tests.support.proc import run_cli

WRONG = "wrong-token-" + "x" * 40


def _request(plane: ControlPlane, method: str, path: str, token: str, source: str = "127.0.0.1",
             body: Any = None) -> tuple[int, Any]:
    """One operator API call from a chosen loopback source address."""
    conn = http.client.HTTPConnection("127.0.0.1", plane.http_port, timeout=30, source_address=(source, 0))
    try:
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers={"Authorization": f"Bearer {token}",
                                                       "Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"null")
    finally:
        conn.close()


def _audit(plane: ControlPlane, action: str) -> list[dict[str, Any]]:
    status, body = _request(plane, "GET", "/v1/audit?limit=1000", plane.token, source="127.0.9.9")
    assert status == 200, body
    return [e for e in body["entries"] if e["action"] == action]


def _enroll_attempts(plane: ControlPlane, n: int) -> list[grpc.StatusCode]:
    cert = (plane.data_dir / "tls" / "server.crt").read_bytes()
    creds = grpc.ssl_channel_credentials(root_certificates=cert)
    public_key = public_key_b64(Ed25519PrivateKey.generate().public_key())
    codes = []
    with grpc.secure_channel(f"127.0.0.1:{plane.control_port}", creds,
                             options=(("grpc.ssl_target_name_override", TLS_NAME),)) as channel:
        call = channel.unary_unary(wire.ENROLL_METHOD, request_serializer=wire.encode,
                                   response_deserializer=wire.decode)
        for i in range(n):
            try:
                call(wire.EnrollRequest(f"guess-{i:06d}", public_key, "flood").to_wire(), timeout=10)
            except grpc.RpcError as e:
                codes.append(e.code())
    return codes


def test_enroll_flood_is_throttled_and_barely_audited(plane: ControlPlane) -> None:
    t0 = time.monotonic()
    codes = _enroll_attempts(plane, 300)
    elapsed_s = time.monotonic() - t0
    denied = codes.count(grpc.StatusCode.PERMISSION_DENIED)
    assert len(codes) == 300
    assert denied <= FAILURE_BURST + elapsed_s * FAILURES_PER_SEC + 1, (denied, elapsed_s)
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 300 - denied
    refused = _audit(plane, "client.enroll")
    assert 1 <= len(refused) <= denied, len(refused)
    assert refused[0]["actor"] == "peer:127.0.0.1"
    assert 'portunus_server_auth_failures_total{reason="throttled",surface="grpc"}' in plane.metrics()
    # The operator API is not blocked by the gRPC flood, and a genuine enrollment works once the block lifts.
    uri = plane.enrollment_uri("edge")
    out = str(plane.root / "edge.json")
    wait_until(lambda: run_cli("portunus-client", "enroll", uri, "--out", out, "--force").returncode == 0, 15,
               "enrollment after the block", 0.5)


def test_wrong_tokens_are_throttled_per_address_and_audited(plane: ControlPlane) -> None:
    t0 = time.monotonic()
    statuses = [_request(plane, "GET", "/v1/rules", WRONG)[0] for _ in range(200)]
    elapsed_s = time.monotonic() - t0
    unauthorized = statuses.count(401)
    assert unauthorized <= FAILURE_BURST + elapsed_s * FAILURES_PER_SEC + 1, (unauthorized, elapsed_s)
    assert statuses.count(429) == 200 - unauthorized
    # While blocked, even the right token is refused from that address: nothing is learned about guesses.
    status, body = _request(plane, "GET", "/v1/rules", plane.token)
    assert status == 429 and body["error"]["code"] == "too_many_failures", body
    # Other addresses are unaffected, and the attempts are in the audit log.
    failed = _audit(plane, "auth.failed")
    assert failed and {e["actor"] for e in failed} == {"peer:127.0.0.1"}
    assert failed[0]["result"] == "refused: invalid or revoked token" and failed[0]["target"] == "'GET /v1/rules'"
    # The block lifts by itself.
    wait_until(lambda: _request(plane, "GET", "/v1/rules", plane.token)[0] == 200, 10, "block to lift", 0.5)


def test_audit_of_failures_from_many_addresses_is_rate_limited(plane: ControlPlane) -> None:
    """Each address stays under its own throttle; the audit log still grows at a bounded rate."""
    t0 = time.monotonic()
    for i in range(60):
        for _ in range(5):
            assert _request(plane, "GET", "/v1/clients", WRONG, source=f"127.0.1.{i + 1}")[0] == 401
    elapsed_s = time.monotonic() - t0
    rows = _audit(plane, "auth.failed")
    assert len(rows) <= AUDIT_BURST + elapsed_s * AUDIT_PER_SEC + 1, (len(rows), elapsed_s)
    time.sleep(2.0 / AUDIT_PER_SEC)
    assert _request(plane, "GET", "/v1/clients", WRONG, source="127.0.2.1")[0] == 401
    after = _audit(plane, "auth.failed")
    newest = after[0]
    assert newest["actor"] == "peer:127.0.2.1"
    # Every failure is either a row or counted in the next written row's suppressed_before
    # (a slow host writes rows during the loop too, each carrying the count since the last).
    suppressed = sum((r.get("detail") or {}).get("suppressed_before", 0) for r in after)
    assert suppressed == 300 - len(rows), (suppressed, len(rows), newest)
    assert "portunus_server_audit_suppressed_total" in plane.metrics()


def test_short_operator_token_is_refused() -> None:
    plane = new_plane()
    try:
        toml = plane.data_dir / "server.toml"
        toml.write_text(toml.read_text().replace(plane.token, "0123456789abcdef"))
        r = run_cli("portunus-server", "--data-dir", str(plane.data_dir), "serve", timeout_s=20)
        assert r.returncode == 2, r.stderr
        assert f"error: {toml}: operator_token: must be at least 32 characters" in r.stderr
    finally:
        remove_plane(plane)
