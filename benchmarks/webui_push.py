"""Does serving the web UI slow the control plane? Push-to-accepting with and without a browser polling.

    python -m benchmarks.webui_push [--rounds 6] [--pushes 40] [--json-out FILE]

A real portunus-server and portunus-client (benchmarks.control_push.Bench)
and a headless Chromium signed in to the UI. Rounds alternate the order of the
cases (ABC, CBA, ...); in each round `--pushes` rules are pushed one after
another in each of three cases: the browser on the rules page (polling GET
/v1/rules every second, as an operator leaves it open), the same request
made every second by a plain process (the server's share, without a
browser rendering on the same CPUs), and the browser on a blank page. Each latency is POST /v1/rules (waits for the client's ack) to
an accepted TCP connect on the new listener; the rules are deleted after
each block, so both cases see the same rule count. Reports median and p99
per case and their ratio; a shared host makes single figures noisy, the
ratio of one interleaved run is what to read.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.control_push import Bench, summarise_ms
from benchmarks.fleet.plane import free_port_block
from tests.support.browser import missing_reason, start_browser, wait_for

PASSWORD = "benchmark password 1"


def _sign_in(driver: Any, base: str) -> None:
    driver.get(base + "/")
    wait_for(driver, lambda: driver.find_elements("id", "login-form"), 30, "sign-in form")
    driver.find_element("id", "f-username").send_keys("root")
    driver.find_element("id", "f-password").send_keys(PASSWORD + "\n")
    wait_for(driver, lambda: "root" in driver.find_element("id", "who").text, 30, "signed in")


def _polling_requests(bench: Bench) -> int:
    """GET /v1/rules answered so far (the server's own request counter)."""
    import tomllib
    import urllib.request

    metrics = tomllib.loads((bench.plane.data / "server.toml").read_text())["metrics_listen"]
    with urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10) as r:
        text = r.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("portunus_server_operator_requests_total{") and 'method="GET"' in line and \
                'route="/v1/rules"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


# The rules page's request, made by a plain process: the server's share of the cost, without a
# browser's rendering competing for the same CPUs.
_POLLER = """
import sys, time, urllib.request
url, cookie = sys.argv[1], sys.argv[2]
while True:
    req = urllib.request.Request(url, headers={"Cookie": cookie})
    with urllib.request.urlopen(req, timeout=10) as r:
        r.read()
    time.sleep(1.0)
"""


def _session_cookie(bench: Bench) -> str:
    import http.client

    conn = http.client.HTTPConnection(*bench.plane.http.rsplit(":", 1), timeout=30)
    conn.request("POST", "/v1/auth/login", json.dumps({"username": "root", "password": PASSWORD}),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return str(resp.headers["Set-Cookie"]).split(";")[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.webui_push", description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=6, help="ABBA rounds (each: one block per case)")
    ap.add_argument("--pushes", type=int, default=40, help="rules pushed per block")
    ap.add_argument("--json-out", metavar="FILE", help="also write the figures here (JSON)")
    args = ap.parse_args(argv)
    reason = missing_reason()
    if reason is not None:
        print(f"error: {reason}", file=sys.stderr)
        return 2

    root = Path(tempfile.mkdtemp(prefix="portunus-bench-webui-", dir="/tmp"))
    bench = Bench(root)
    driver = None
    cases = ("browser_polling", "http_polling", "no_browser")
    samples: dict[str, list[float]] = {c: [] for c in cases}
    polls: dict[str, int] = {c: 0 for c in cases}
    poller: subprocess.Popen | None = None
    load_before = os.getloadavg()
    try:
        bench.start()
        resp = bench.api.put("/v1/users/1/password", {"password": PASSWORD})
        assert resp.status == 200, resp
        driver = start_browser()
        base = f"http://{bench.plane.http}"
        _sign_in(driver, base)
        cookie = _session_cookie(bench)
        for rnd in range(args.rounds):
            order = list(cases) if rnd % 2 == 0 else list(reversed(cases))
            for case in order:
                if case == "browser_polling":
                    driver.get(base + "/ui/#/rules")
                    wait_for(driver, lambda: driver.find_elements("id", "rules-table"), 30, "rules page")
                elif case == "http_polling":
                    poller = subprocess.Popen([sys.executable, "-c", _POLLER, base + "/v1/rules", cookie])
                time.sleep(1.5)  # the page settled (and its first polls done) before measuring
                # Fresh ports for every block: on a shared host another program may take one meanwhile.
                ports = free_port_block(args.pushes)
                before = _polling_requests(bench)
                samples[case] += bench.push_latency(ports)
                polls[case] += _polling_requests(bench) - before
                driver.get("about:blank")
                if poller is not None:
                    poller.terminate()
                    poller.wait(10)
                    poller = None
                bench.delete_all()
        figures = {c: summarise_ms(samples[c]) for c in cases}
        without = figures["no_browser"]
        result = {
            "format": 1,
            "benchmark": "benchmarks/webui_push.py",
            "host": {"cpus": os.cpu_count(), "note": "shared host, other jobs running: read the ratios",
                     "loadavg_1m_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)]},
            "rounds": args.rounds, "pushes_per_block": args.pushes,
            "push_to_accepting": figures,
            "rules_page_polls_during_blocks": polls,
            "ratio_over_no_browser": {c: {"median": round(figures[c]["median_ms"] / without["median_ms"], 3),
                                          "p99": round(figures[c]["p99_ms"] / without["p99_ms"], 3)}
                                      for c in cases if c != "no_browser"},
        }
    finally:
        if poller is not None:
            poller.terminate()
            poller.wait(10)
        if driver is not None:
            driver.quit()
        bench.close()
        shutil.rmtree(root, ignore_errors=True)
    for case, s in result["push_to_accepting"].items():
        print(f"{case:16s} n={s['n']}: median {s['median_ms']} ms, p99 {s['p99_ms']} ms, max {s['max_ms']} ms")
    for case, r in result["ratio_over_no_browser"].items():
        print(f"{case} / no_browser: median x{r['median']}, p99 x{r['p99']}")
    print(f"GET /v1/rules answered during the blocks: {polls}")
    if args.json_out:
        Path(args.json_out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json_out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
