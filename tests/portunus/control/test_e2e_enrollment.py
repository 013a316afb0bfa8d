"""Enrollment URIs are bound to one client, superseded by a newer one, listed and revocable
(issue 15 item 2: a second URI for the same name used to take over an enrolled client).

Real server and client processes, real TLS, real SQLite file.
"""

from __future__ import annotations

from tests.portunus.control.support import ControlPlane
from tests.support.net import free_port
from tests.support.proc import run_cli


def _enroll(plane: ControlPlane, uri: str, out: str) -> tuple[int, str]:
    r = run_cli("portunus-client", "enroll", uri, "--out", str(plane.root / out))
    return r.returncode, r.stderr


def test_a_second_uri_cannot_take_over_an_enrolled_client(plane: ControlPlane) -> None:
    first = plane.api().post("/v1/client-enrollments", {"name": "edge", "address": "127.0.0.1"})
    second = plane.api().post("/v1/client-enrollments", {"name": "edge", "address": "127.0.0.1"})
    assert first.status == second.status == 201

    rc, err = _enroll(plane, second.body["uri"], "edge.bundle.json")
    assert rc == 0, err
    client = plane.start_client(plane.root / "edge.bundle.json")
    plane.wait_online("edge")

    # The first URI (held by someone else, or sent twice) no longer enrolls anyone.
    rc, err = _enroll(plane, first.body["uri"], "thief.bundle.json")
    assert rc == 1 and "revoked (superseded by a newer URI" in err, err
    assert not (plane.root / "thief.bundle.json").exists()

    # The running client keeps its identity: across a server restart it reconnects and takes rules.
    assert plane.server is not None
    plane.server.stop()
    plane.start_server()
    plane.wait_online("edge")
    assert plane.push("edge", "still-mine", free_port(), "127.0.0.1:9").status == 201
    assert client.alive()
    refused = [e for e in plane.api().get("/v1/audit").body["entries"]
               if e["action"] == "client.enroll" and e["result"].startswith("refused")]
    assert refused and "superseded" in refused[0]["result"]
    assert second.body["superseded"] == 1 and second.body["id"] != first.body["id"]


def test_outstanding_uris_are_listed_and_revocable(plane: ControlPlane) -> None:
    created = plane.api().post("/v1/client-enrollments", {"name": "branch", "address": "10.1.2.3"})
    assert created.status == 201
    listing = plane.api().get("/v1/client-enrollments")
    assert listing.status == 200
    (entry,) = listing.body["enrollments"]
    assert (entry["id"], entry["client"], entry["status"]) == (created.body["id"], "branch", "outstanding")
    secret = created.body["uri"].split("secret=")[1].split("&")[0]
    assert secret not in str(listing.body), "the listing must not carry the secret"

    revoked = plane.api().delete(f"/v1/client-enrollments/{entry['id']}")
    assert revoked.status == 200 and revoked.body["status"] == "revoked", revoked
    assert plane.api().get("/v1/client-enrollments").body["enrollments"][0]["status"] == "revoked"
    rc, err = _enroll(plane, created.body["uri"], "branch.json")
    assert rc == 1 and "enrollment URI revoked (revoked by operator_token)" in err, err
    assert plane.api().delete("/v1/client-enrollments/999").status == 404

    # A fresh URI works; once used, it cannot be revoked (the client is enrolled).
    fresh = plane.api().post("/v1/client-enrollments", {"name": "branch", "address": "10.1.2.3"})
    assert fresh.status == 201 and fresh.body["superseded"] == 0
    rc, err = _enroll(plane, fresh.body["uri"], "branch.json")
    assert rc == 0, err
    used = plane.api().delete(f"/v1/client-enrollments/{fresh.body['id']}")
    assert used.status == 409 and used.error["code"] == "enrollment_used"
    actions = {(e["action"], e["result"]) for e in plane.api().get("/v1/audit").body["entries"]}
    assert ("enrollment.revoke", "ok") in actions

    # A viewer may list but not revoke.
    viewer = plane.api().post("/v1/tokens", {"name": "v", "role": "viewer"}).body["token"]
    assert plane.api(viewer).get("/v1/client-enrollments").status == 200
    assert plane.api(viewer).delete(f"/v1/client-enrollments/{created.body['id']}").status == 403
