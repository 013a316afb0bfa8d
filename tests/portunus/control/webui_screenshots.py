"""Screenshots of the web UI's main pages for the README (docs/ui/*.png), from a real server and clients.

    .venv/bin/python -m tests.portunus.control.webui_screenshots [OUT_DIR]    (or: make ui-screenshots)

Starts a portunus-server on a temp data dir, two clients (one enrolled and
online, one with an outstanding URI), a user with a grant and a quota, TCP
and UDP rules carrying real loopback traffic, then signs in with headless
Chromium and saves one PNG per page. Everything started is stopped at the end.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.portunus.control.support import new_plane, remove_plane, wait_until
from tests.support.browser import missing_reason, start_browser, wait_for
from tests.support.net import UdpEchoServer, free_port, free_port_range
from tests.support.traffic import ByteSink

PASSWORD = "screenshot password 1"


def _tcp(port: int, stop: threading.Event, chunk_bytes: int, pause_s: float) -> None:
    chunk = b"s" * chunk_bytes
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        while not stop.is_set():
            s.sendall(chunk)
            time.sleep(pause_s)


def _udp(port: int, stop: threading.Event) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect(("127.0.0.1", port))
        s.settimeout(0.02)
        while not stop.is_set():
            s.send(b"q" * 900)
            try:
                s.recv(2048)
            except OSError:
                pass


def main(out: Path) -> int:
    reason = missing_reason()
    if reason is not None:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    plane = new_plane()
    sink, echo = ByteSink(), UdpEchoServer()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    driver: Any = None
    try:
        plane.start_server()
        api = plane.api()
        assert api.put("/v1/users/1/password", {"password": PASSWORD}).status == 200
        plane.start_client(plane.enroll("edge-1"))
        plane.wait_online("edge-1")
        plane.enrollment_uri("edge-2")  # not enrolled yet: shows as pending, its URI outstanding
        alice = api.post("/v1/users", {"username": "alice", "password": PASSWORD, "role": "user"}).body["id"]
        api.post("/v1/users", {"username": "bob", "password": PASSWORD, "role": "user"})
        base = free_port_range(100)
        api.post("/v1/grants", {"user_id": alice, "client": "edge-1", "listen_port_start": base,
                                "listen_port_end": base + 99, "protocols": ["tcp", "udp"]})
        api.put(f"/v1/users/{alice}/quotas/edge-1", {"bytes": 50 * 10**9, "period": "monthly", "reset_day": 1})
        web, dns, alice_port = free_port(), free_port(socket.SOCK_DGRAM), base + 10
        assert plane.push("edge-1", "web", web, f"127.0.0.1:{sink.port}").status == 201
        assert plane.push("edge-1", "dns", dns, f"127.0.0.1:{echo.port}", protocol="udp").status == 201
        assert plane.push("edge-1", "alice-web", alice_port, f"127.0.0.1:{sink.port}", owner="user:alice",
                          rate_limit={"bandwidth_in_bps": 4_000_000}).status == 201
        api.put("/v1/clients/edge-1/owners/user:alice/rate-limit", {"bandwidth_in_bps": 8_000_000})
        # The API does not record a user on rules a superadmin pushes; alice's quota counts owner user:alice.
        for target in ((_tcp, (web, stop, 65536, 0.01)), (_tcp, (alice_port, stop, 16384, 0.01)), (_udp, (dns, stop))):
            t = threading.Thread(target=target[0], args=target[1], daemon=True)  # type: ignore[operator]
            t.start()
            threads.append(t)
        wait_until(lambda: all((r["stats"] or {}).get("rate_in_bytes_per_s", 0) > 0
                               for r in api.get("/v1/rules").body["rules"]), 30, "traffic on every rule")

        driver = start_browser()
        base_url = f"http://{plane.http_endpoint}"
        driver.get(base_url + "/")
        wait_for(driver, lambda: driver.find_elements("id", "login-form"), what="sign-in form")
        driver.find_element("id", "f-username").send_keys("root")
        driver.save_screenshot(str(out / "signin.png"))
        driver.find_element("id", "f-password").send_keys(PASSWORD + "\n")
        wait_for(driver, lambda: "root" in driver.find_element("id", "who").text, what="signed in")

        def page(name: str, ready: Any) -> None:
            driver.get(f"{base_url}/ui/#/{name}")
            wait_for(driver, ready, 30, f"page {name}")
            time.sleep(1.5)  # one more refresh: rates settled

        page("rules", lambda: len(driver.find_elements("css selector", "#rules-table tr[data-rule-id]")) == 3 and
             "/s" in driver.find_element("css selector", "#rules-table td[data-col='rate_in']").text)
        driver.save_screenshot(str(out / "rules.png"))
        driver.find_element("id", "new-rule").click()
        driver.find_element("id", "f-rule-name").send_keys("api")
        driver.find_element("id", "f-rule-listen_port").send_keys("70000")
        driver.find_element("id", "f-rule-target").send_keys("10.0.0.9")
        driver.find_element("id", "rule-submit").click()
        wait_for(driver, lambda: driver.find_element("id", "f-rule-target-error").text, what="validation errors")
        driver.execute_script("document.getElementById('rule-editor').scrollIntoView()")
        driver.save_screenshot(str(out / "rule-errors.png"))

        page("clients", lambda: "online" in driver.find_element("id", "clients-table").text)
        driver.find_element("id", "f-enroll-name").send_keys("edge-3")
        driver.find_element("id", "f-enroll-address").send_keys("10.0.0.7\n")
        wait_for(driver, lambda: driver.find_elements("id", "enroll-uri"), what="the URI")
        driver.save_screenshot(str(out / "clients.png"))
        page("owners", lambda: "alice" in driver.find_element("id", "grants-table").text)
        driver.save_screenshot(str(out / "owners.png"))
        page("quotas", lambda: "alice" in driver.find_element("id", "quotas-table").text)
        driver.save_screenshot(str(out / "quotas.png"))
        page("audit", lambda: len(driver.find_elements("css selector", "#audit-table tr[data-key]")) > 5)
        driver.save_screenshot(str(out / "audit.png"))
        print("\n".join(str(p) for p in sorted(out.glob("*.png"))))
        return 0
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
        if driver is not None:
            driver.quit()
        remove_plane(plane)
        sink.close()
        echo.close()


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/ui")))
