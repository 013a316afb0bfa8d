"""GET /v1/audit filters and paging over HTTP, against a real server (the audit page uses them)."""

from __future__ import annotations

from tests.portunus.control.support import ControlPlane


def test_audit_query_filters_and_refusals(plane: ControlPlane) -> None:
    api = plane.api()
    for name in ("a", "b", "c"):
        assert api.post("/v1/client-enrollments", {"name": f"edge-{name}", "address": "127.0.0.1"}).status == 201
    assert api.post("/v1/client-enrollments", {"name": "bad name!", "address": "x"}).status == 400
    made = api.get("/v1/audit?action=enrollment.create").body["entries"]
    assert [e["result"].split(" ")[0] for e in made] == ["error", "ok", "ok", "ok"]
    assert [e["target"] for e in api.get("/v1/audit?action=enrollment.create&result=ok&q=EDGE-B").body["entries"]] \
        == ["enrollment 2 for client edge-b"]
    page = api.get(f"/v1/audit?action=enrollment.create&limit=2&before_id={made[1]['id']}").body["entries"]
    assert [e["id"] for e in page] == [made[2]["id"], made[3]["id"]]
    assert api.get("/v1/audit?actor=operator_token&action=nothing.like.this").body["entries"] == []
    for query in ("before_id=-1", "before_id=x", "limit=0", "action=" + "a" * 300, "q=%0a"):
        resp = api.get(f"/v1/audit?{query}")
        assert resp.status == 400 and resp.error["code"] == "invalid", (query, resp)
