"""The web UI in a real headless Chromium against a real portunus-server and portunus-client.

One browser and one server for the module (the tests run in file order and
build on each other: sign-in, enrollment, rules, users). Every test ends by
checking the browser console: no errors beyond the API refusals it provoked
on purpose (Chrome logs each 4xx answer to fetch()).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.portunus.control.support import (
    ControlPlane,
    new_plane,
    refused,
    remove_plane,
    wait_until,
)
from tests.support.browser import console_errors, missing_reason, start_browser, wait_for
from tests.support.net import free_port, free_port_range
from tests.support.proc import run_cli
from tests.support.traffic import ByteSink

pytestmark = pytest.mark.skipif(missing_reason() is not None, reason=missing_reason() or "")

ROOT_PASSWORD = "root password for the browser tests"
ALICE_PASSWORD = "alice password for the browser tests"


class UI:
    """The module's server, browser and the state the tests hand on to each other."""

    def __init__(self, plane: ControlPlane, driver: Any) -> None:
        self.plane = plane
        self.driver = driver
        self.base = f"http://{plane.http_endpoint}"
        self.facts: dict[str, Any] = {}

    def by_id(self, id_: str) -> Any:
        return self.driver.find_element("id", id_)

    def css(self, selector: str) -> list[Any]:
        return self.driver.find_elements("css selector", selector)

    def fill(self, id_: str, value: str) -> Any:
        el = self.by_id(id_)
        el.clear()
        el.send_keys(value)
        return el

    def select(self, id_: str, value: str) -> None:
        from selenium.webdriver.support.select import Select

        wait_for(self.driver, lambda: any(o.get_attribute("value") == value for o in Select(self.by_id(id_)).options),
                 what=f"option {value} in #{id_}")
        Select(self.by_id(id_)).select_by_value(value)

    def wait(self, pred: Any, what: str, timeout_s: float = 20.0) -> Any:
        return wait_for(self.driver, pred, timeout_s, what)

    def go(self, page: str) -> None:
        self.driver.find_element("css selector", f"header nav a[data-page='{page}']").click()
        self.wait(lambda: self.css(f"header nav a[data-page='{page}'][aria-current='page']"), f"page {page}")

    def sign_in(self, username: str, password: str) -> None:
        self.driver.get(self.base + "/")
        self.wait(lambda: self.css("#login-form"), "the sign-in form")
        self.fill("f-username", username)
        self.fill("f-password", password + "\n")  # Enter submits: keyboard use

    def rule_row(self, name: str) -> Any:
        rows = self.css(f"#rules-table tr[data-rule-name='{name}']")
        return rows[0] if rows else None

    def cell(self, row: Any, col: str) -> str:
        return str(row.find_element("css selector", f"td[data-col='{col}']").text)

    def field_error(self, form_field_id: str) -> str:
        return str(self.by_id(form_field_id + "-error").text)

    def unlabelled(self) -> list[str]:
        """Form controls on the page that no label names (screen readers would read nothing)."""
        return list(self.driver.execute_script("""
            return [...document.querySelectorAll("input:not([type=hidden]), select, textarea, button")]
              .filter((el) => el.offsetParent !== null || el.closest("header"))
              .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute("aria-label")
                              && !(el.tagName === "BUTTON" && el.textContent.trim()))
              .map((el) => el.outerHTML.slice(0, 160));"""))

    def no_console_errors(self, *expected: tuple[str, int]) -> None:
        allowed = set(expected)
        errors = console_errors(self.driver, lambda path, status: (path.split("?")[0], status) in allowed)
        assert errors == [], errors


@pytest.fixture(scope="module")
def ui() -> Iterator[UI]:
    plane = new_plane()
    driver = None
    try:
        plane.start_server()
        resp = plane.api().put("/v1/users/1/password", {"password": ROOT_PASSWORD})
        assert resp.status == 200, resp
        driver = start_browser()
        yield UI(plane, driver)
    finally:
        if driver is not None:
            driver.quit()
        remove_plane(plane)


class Traffic:
    """One TCP connection pushing ~1.6 MB/s through `port` until stopped."""

    def __init__(self, port: int) -> None:
        self._stop = threading.Event()
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        chunk = b"w" * 16384
        try:
            while not self._stop.is_set():
                self._sock.sendall(chunk)
                time.sleep(0.01)
        except OSError:
            pass  # the rule was deleted under it

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()


def test_pages_are_served_with_a_strict_policy(ui: UI) -> None:
    import urllib.request

    with urllib.request.urlopen(ui.base + "/ui/", timeout=10) as r:
        assert r.status == 200 and "text/html" in r.headers["Content-Type"]
        csp = r.headers["Content-Security-Policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, csp
    with urllib.request.urlopen(ui.base + "/", timeout=10) as r:
        assert r.url.endswith("/ui/")  # the root redirects to the UI
    with urllib.request.urlopen(ui.base + "/v1/auth/session", timeout=10) as r:
        assert json.load(r) == {"authenticated": False}


def test_wrong_password_is_refused(ui: UI) -> None:
    ui.sign_in("root", "not the password at all")
    ui.wait(lambda: "wrong username or password" in ui.by_id("login-error").text, "the refusal")
    assert ui.by_id("top").get_attribute("hidden") is not None  # still signed out
    assert ui.by_id("f-password").get_attribute("value") == ""
    assert ui.unlabelled() == []
    ui.no_console_errors(("/v1/auth/login", 401))


def test_sign_in_enroll_a_client_and_see_it_online(ui: UI) -> None:
    ui.sign_in("root", ROOT_PASSWORD)
    ui.wait(lambda: "root (superadmin)" in ui.by_id("who").text, "signed in as root")
    ui.go("clients")
    ui.fill("f-enroll-name", "edge")
    ui.fill("f-enroll-address", "127.0.0.1\n")  # Enter in the form: keyboard use
    uri = ui.wait(lambda: ui.by_id("enroll-uri").get_attribute("value"), "the enrollment URI")
    assert uri.startswith("portunus://") and "secret=" in uri, uri
    ui.by_id("copy-uri").click()
    ui.wait(lambda: ui.by_id("copy-status").text, "the copy status")
    assert ui.by_id("copy-status").text in ("Copied to the clipboard.", "Selected: press Ctrl-C to copy.")
    ui.wait(lambda: any("outstanding" in r.text for r in ui.css("#enrollments-table tbody tr")), "outstanding URI")

    bundle = ui.plane.root / "edge.bundle.json"
    r = run_cli("portunus-client", "enroll", uri, "--out", str(bundle))
    assert r.returncode == 0, r.stderr
    ui.plane.start_client(Path(bundle))

    def edge_row() -> Any:
        rows = ui.css("#clients-table tr[data-key='edge']")
        return rows[0] if rows and "online" in rows[0].text else None

    row = ui.wait(edge_row, "client edge online", 40)
    assert ui.cell(row, "address") == "127.0.0.1"
    assert ui.cell(row, "last_seen").startswith("now (connected since ")
    ui.wait(lambda: ui.cell(edge_row(), "version").split(" of ")[0] != "—", "an applied version")
    ui.wait(lambda: any("used" in r.text for r in ui.css("#enrollments-table tbody tr")), "URI used")
    ui.no_console_errors()


def test_create_a_rule_and_see_live_bytes_then_errors_then_delete(ui: UI) -> None:
    sink = ByteSink()
    port = free_port()
    ui.facts["port"] = port
    traffic = None
    try:
        ui.go("rules")
        ui.by_id("new-rule").click()
        ui.select("f-rule-client", "edge")
        ui.fill("f-rule-name", "web")
        ui.fill("f-rule-listen_addr", "127.0.0.1")
        ui.fill("f-rule-listen_port", str(port))
        ui.fill("f-rule-target", f"127.0.0.1:{sink.port}")
        ui.by_id("rule-submit").click()
        ui.wait(lambda: "is active" in ui.by_id("rules-notice").text, "rule created", 30)
        row = ui.wait(lambda: ui.rule_row("web"), "the web row")
        ui.wait(lambda: ui.cell(ui.rule_row("web"), "status") == "active", "status active")
        assert ui.cell(row, "listen") == f"127.0.0.1:{port}"

        traffic = Traffic(port)

        def moving() -> bool:
            r = ui.rule_row("web")
            rate = ui.cell(r, "rate_in")
            moved = int(r.find_element("css selector", "td[data-col='bytes_in']").get_attribute("data-bytes") or 0)
            return rate.endswith("/s") and rate not in ("0 B/s", "—") and moved > 0 and ui.cell(r, "conns") == "1"

        ui.wait(moving, "live in-rate, bytes and a connection on the web row", 30)
        first = int(ui.rule_row("web").find_element("css selector", "td[data-col='bytes_in']").get_attribute("data-bytes"))
        ui.wait(lambda: int(ui.rule_row("web").find_element("css selector", "td[data-col='bytes_in']")
                            .get_attribute("data-bytes")) > first, "the byte count to grow without a reload")
        traffic.stop()
        traffic = None
        assert sink.total > 0

        # Edit: the form comes back filled in; another key goes through the JSON box.
        ui.rule_row("web").find_element("css selector", "button[aria-label='Edit rule web']").click()
        ui.wait(lambda: ui.by_id("f-rule-target").get_attribute("value") == f"127.0.0.1:{sink.port}", "edit form")
        assert ui.by_id("f-rule-client").get_attribute("disabled") is not None  # rules do not move
        ui.fill("f-rule-extra", '{"idle_timeout_secs": 600}')
        ui.by_id("rule-submit").click()
        ui.wait(lambda: "is active" in ui.by_id("rules-notice").text and not ui.css("#rule-form"), "rule saved", 30)
        rule_id = ui.rule_row("web").get_attribute("data-rule-id")
        stored = ui.plane.api().get(f"/v1/rules/{rule_id}").body["rule"]
        assert stored["idle_timeout_secs"] == 600 and stored["listen_port"] == port, stored

        # An invalid target: the API's validation message next to the Target field.
        ui.by_id("new-rule").click()
        ui.select("f-rule-client", "edge")
        ui.fill("f-rule-name", "broken")
        ui.fill("f-rule-listen_port", str(free_port()))
        ui.fill("f-rule-target", "no-port-here")
        ui.by_id("rule-submit").click()
        ui.wait(lambda: ui.field_error("f-rule-target"), "the target error")
        assert "target" in ui.field_error("f-rule-target")
        assert ui.by_id("f-rule-target").get_attribute("aria-invalid") == "true"
        assert ui.driver.switch_to.active_element.get_attribute("id") == "f-rule-target"  # focus moved there
        assert ui.field_error("f-rule-listen_port") == ""
        # A port out of range: next to the port field.
        ui.fill("f-rule-target", "127.0.0.1:9")
        ui.fill("f-rule-listen_port", "70000")
        ui.by_id("rule-submit").click()
        ui.wait(lambda: ui.field_error("f-rule-listen_port"), "the port error")
        assert "listen_port" in ui.field_error("f-rule-listen_port") and ui.field_error("f-rule-target") == ""
        ui.by_id("rule-cancel").click()

        # Delete (with confirmation): the row goes and the listener closes.
        row = ui.rule_row("web")
        row.find_element("css selector", "button.danger").click()
        ui.driver.find_element("css selector", "#rules-table button[data-confirm='yes']").click()
        ui.wait(lambda: "deleted" in ui.by_id("rules-notice").text, "rule deleted")
        ui.wait(lambda: ui.rule_row("web") is None, "the row to go")
        wait_until(lambda: refused(port), 15, "the listener closed")
    finally:
        if traffic is not None:
            traffic.stop()
        sink.close()
    ui.no_console_errors(("/v1/rules", 400))


def test_audit_log_shows_the_changes_and_filters(ui: UI) -> None:
    ui.go("audit")

    def rows() -> list[Any]:
        return ui.css("#audit-table tbody tr[data-key]")

    ui.wait(lambda: len(rows()) > 3, "audit rows")
    actions = {ui.cell(r, "action") for r in rows()}
    assert {"auth.login", "enrollment.create", "rule.create", "rule.update", "rule.delete"} <= actions, actions
    ui.select("f-audit-action", "rule.create")  # filtered by the server
    ui.wait(lambda: rows() and all(ui.cell(r, "action") == "rule.create" for r in rows()), "only rule.create rows")
    results = [ui.cell(r, "result") for r in rows()]
    assert "ok" in results and any(x.startswith("error 400") for x in results), results
    ui.select("f-audit-result", "error")
    ui.wait(lambda: rows() and all(ui.cell(r, "result").startswith("error") for r in rows()), "only errors")
    ui.fill("f-audit-text", "no-port-here")  # the invalid target is in the entry's detail
    ui.wait(lambda: len(rows()) == 1 and "missing port" in ui.cell(rows()[0], "result"), "the invalid-target entry")
    ui.fill("f-audit-text", "nothing-has-this-text")
    ui.wait(lambda: not rows(), "no rows for an unknown text")
    assert ui.by_id("audit-count").text.startswith("0 entries")
    ui.fill("f-audit-text", "")
    ui.select("f-audit-action", "")
    ui.select("f-audit-result", "")
    ui.select("f-audit-actor", "user:root")
    ui.wait(lambda: rows() and all(ui.cell(r, "actor") == "user:root" for r in rows()) and
            "auth.login" in {ui.cell(r, "action") for r in rows()}, "only root's entries")
    ui.no_console_errors()


def test_a_change_without_the_csrf_token_is_refused(ui: UI) -> None:
    script = """
        const [path, token, done] = arguments;
        const headers = {"Content-Type": "application/json"};
        if (token) headers["X-CSRF-Token"] = token;
        fetch(path, {method: "POST", headers, body: "{}", credentials: "same-origin"})
          .then(async (r) => done([r.status, await r.json()]), (e) => done([0, String(e)]));
    """
    status, body = ui.driver.execute_async_script(script, "/v1/rules", None)
    assert status == 403 and body["error"]["reason"] == "csrf_token_missing", body
    status, body = ui.driver.execute_async_script(script, "/v1/rules", "0" * 64)
    assert status == 403 and body["error"]["reason"] == "csrf_token_mismatch", body
    token = ui.driver.execute_async_script(
        "const done = arguments[0]; fetch('/v1/auth/session').then(r => r.json()).then(b => done(b.csrf_token));")
    status, body = ui.driver.execute_async_script(script, "/v1/rules", token)
    assert status == 400 and "client" in body["error"]["message"], body  # past CSRF: the body is checked
    refused_ = [e for e in ui.plane.api().get("/v1/audit?limit=50").body["entries"] if e["action"] == "csrf.refused"]
    assert {e["reason"] for e in refused_} == {"csrf_token_missing", "csrf_token_mismatch"}
    ui.no_console_errors(("/v1/rules", 403), ("/v1/rules", 400))


def test_a_user_sees_the_grant_refusal_next_to_the_port(ui: UI) -> None:
    api = ui.plane.api()
    resp = api.post("/v1/users", {"username": "alice", "password": ALICE_PASSWORD, "role": "user"})
    assert resp.status == 201, resp
    base = free_port_range(10)
    resp = api.post("/v1/grants", {"user_id": resp.body["id"], "client": "edge", "listen_port_start": base,
                                   "listen_port_end": base + 9, "protocols": ["tcp"]})
    assert resp.status == 201, resp
    ui.by_id("logout").click()
    ui.wait(lambda: "Signed out" in ui.by_id("login-error").text, "signed out")
    ui.sign_in("alice", ALICE_PASSWORD)
    ui.wait(lambda: "alice (user)" in ui.by_id("who").text, "signed in as alice")
    ui.go("rules")
    ui.by_id("new-rule").click()
    ui.select("f-rule-client", "edge")
    assert not ui.css("#f-rule-owner")  # a user's rules run under their own owner
    ui.fill("f-rule-name", "alice-web")
    ui.fill("f-rule-listen_addr", "127.0.0.1")
    ui.fill("f-rule-listen_port", str(base + 100))
    ui.fill("f-rule-target", "127.0.0.1:9")
    ui.by_id("rule-submit").click()
    ui.wait(lambda: ui.field_error("f-rule-listen_port"), "the grant refusal")
    assert str(base + 100) in ui.field_error("f-rule-listen_port")
    assert f"{base}-{base + 9}" in ui.field_error("f-rule-listen_port"), ui.field_error("f-rule-listen_port")
    ui.fill("f-rule-listen_port", str(base + 1))
    ui.by_id("rule-submit").click()
    ui.wait(lambda: "is active" in ui.by_id("rules-notice").text, "alice's rule inside her grant", 30)
    row = ui.wait(lambda: ui.rule_row("alice-web"), "alice's row")
    assert ui.cell(row, "owner") == "user:alice"
    ui.go("owners")
    ui.wait(lambda: [ui.cell(r, "ports") for r in ui.css("#grants-table tbody tr[data-key]")] == [f"{base}–{base + 9}"],
            "alice's grant only")
    ui.no_console_errors(("/v1/rules", 403))


def test_quota_and_owner_limit_set_from_the_pages(ui: UI) -> None:
    ui.by_id("logout").click()
    ui.wait(lambda: ui.css("#login-form"), "signed out")
    ui.sign_in("root", ROOT_PASSWORD)
    ui.wait(lambda: "root (superadmin)" in ui.by_id("who").text, "signed in as root")
    alice = next(u["id"] for u in ui.plane.api().get("/v1/users").body["users"] if u["username"] == "alice")
    ui.go("quotas")
    ui.select("f-quota-user", str(alice))
    ui.select("f-quota-client", "edge")
    ui.fill("f-quota-bytes", "not a size")
    ui.by_id("quota-form").find_element("css selector", "button[type='submit']").click()
    ui.wait(lambda: ui.field_error("f-quota-bytes"), "the bytes error")
    ui.fill("f-quota-bytes", "1GiB")
    ui.by_id("quota-form").find_element("css selector", "button[type='submit']").click()
    row = ui.wait(lambda: next((r for r in ui.css("#quotas-table tbody tr[data-key]") if "alice" in r.text), None),
                  "alice's quota row")
    assert ui.cell(row, "limit") == "1.07 GB" and ui.cell(row, "status") == "ok", row.text
    quota = ui.plane.api().get("/v1/quotas").body["quotas"][0]
    assert quota["limit_bytes"] == 2**30 and quota["period"] == "monthly", quota

    ui.go("owners")
    ui.select("f-limit-client", "edge")
    ui.fill("f-limit-owner", "user:alice")
    ui.fill("f-limit-bandwidth_in_bps", "0")
    ui.by_id("limit-form").find_element("css selector", "button[type='submit']").click()
    ui.wait(lambda: ui.field_error("f-limit-bandwidth_in_bps"), "the zero-bandwidth error")
    ui.fill("f-limit-bandwidth_in_bps", "5000000")
    ui.by_id("limit-form").find_element("css selector", "button[type='submit']").click()
    ui.wait(lambda: any("bandwidth_in_bps = 5000000" in r.text for r in ui.css("#limits-table tbody tr[data-key]")),
            "the limit listed")
    assert ui.plane.client_view("edge")["owners"]["user:alice"] == {"bandwidth_in_bps": 5000000}
    for page in ("clients", "rules", "owners", "quotas", "audit"):
        ui.go(page)
        ui.wait(lambda: ui.css("main table tbody tr"), f"page {page} filled")
        assert ui.unlabelled() == [], (page, ui.unlabelled())
    ui.wait(lambda: {"quota.set", "owner.rate_limit.set"} <= {ui.cell(r, "action") for r in
                                                            ui.css("#audit-table tbody tr[data-key]")}, "audited")
    ui.no_console_errors((f"/v1/users/{alice}/quotas/edge", 400), ("/v1/clients/edge/owners/user%3Aalice/rate-limit", 400),
                         ("/v1/clients/edge/owners/user:alice/rate-limit", 400))

def test_the_console_check_catches_script_errors(ui: UI) -> None:
    """The check the other tests end with is not blind: a console.error and an uncaught error show."""
    ui.driver.execute_script("console.error('deliberate console error'); setTimeout(() => { throw new Error('boom'); });")
    time.sleep(0.3)
    errors = console_errors(ui.driver)
    assert any("deliberate console error" in e for e in errors) and any("boom" in e for e in errors), errors
    ui.driver.execute_script("document.querySelector('main').append(document.createElement('input'))")
    assert len(ui.unlabelled()) == 1  # and the label check sees a control nobody named
