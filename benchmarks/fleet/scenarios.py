"""The fleet scenarios: sequential pushes to one client, real clients through outages, simulated fleets.

Each scenario starts its own server on a fresh data dir, stops everything it
started on every exit path, and returns one JSON-ready dict: summaries next
to the raw series they come from (so plots can be redrawn from the file).
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.fleet.plane import Plane, free_port_block, wait_for
from benchmarks.fleet.realclients import RealClient, enroll_clients, sample_clients
from benchmarks.fleet.sim import SimWorker, report_all
from benchmarks.fleet.stats import peak_rate_per_s, ratio, summarise_ms, summarise_s

log = logging.getLogger("benchmarks.fleet")

# Nothing listens here: pushed rules are only bound, never used for traffic.
TARGET = "127.0.0.1:9"
SYNC_TIMEOUT_S = 600.0
_APPLIED = re.compile(r"rule set version (\d+) (\w+) applied in ([\d.]+) ms: (\d+) rule.*?data plane ([\d.]+) ms")


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _round(xs: list[float], digits: int = 4) -> list[float]:
    return [round(x, digits) for x in xs]


def _pushes(plane: Plane, jobs: list[tuple[str, str, int]], concurrency: int) -> tuple[list[float], list[str]]:
    """POST each (client, rule name, port) waiting for the ack, `concurrency` at a time: (seconds, failures)."""
    def one(job: tuple[str, str, int]) -> tuple[float, int, Any]:
        return plane.push(job[0], job[1], job[2], TARGET)

    took, failures = [], []
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        for job, (s, status, body) in zip(jobs, pool.map(one, jobs), strict=True):
            if status == 201:
                took.append(s)
            else:
                failures.append(f"{job[0]}/{job[1]}: HTTP {status} {body}")
    return took, failures


def _wait_synced(plane: Plane, names: set[str], timeout_s: float, interval_s: float) -> float:
    """Block until every client in `names` is online with its current version acked; the time (epoch s)."""
    wait_for(lambda: plane.synced(names) == names, timeout_s, f"{len(names)} clients synced", interval_s)
    return time.time()


# ------------------------------------------------------------------ pushes to one client


def run_pushes(root: Path, *, pushes: int, large_rules: int, large_pushes: int,
               pythonpath: str | None = None) -> dict[str, Any]:
    """`pushes` sequential acked pushes to one real client, then the same at `large_rules` rules."""
    plane = Plane(root, pythonpath=pythonpath)
    client: RealClient | None = None
    out: dict[str, Any] = {"pushes": pushes, "large_rules": large_rules, "load_before": _loadavg()}
    try:
        plane.start()
        [client], _ = enroll_clients(plane, ["bench"], root / "clients")
        client.start(pythonpath)
        _wait_synced(plane, {"bench"}, 120, 0.05)
        extra = max(0, large_rules - pushes)
        ports = free_port_block(pushes + extra + large_pushes)
        took, failures = _pushes(plane, [("bench", f"p{i}", port) for i, port in enumerate(ports[:pushes])], 1)
        if failures:
            raise RuntimeError(f"{len(failures)} pushes failed, first: {failures[0]}")
        first, last = summarise_ms(took[:100]), summarise_ms(took[-100:])
        out["sequential"] = {"all": summarise_ms(took), "first_100": first, "last_100": last,
                             "p99_last_over_first": ratio(last["p99_ms"], first["p99_ms"]),
                             "p50_last_over_first": ratio(last["p50_ms"], first["p50_ms"]),
                             "latency_s": _round(took)}
        out["client_apply"] = _client_applies(client)
        out["sequential"] |= _without_dataplane(took, out["client_apply"])
        out["server_after_pushes"] = plane.sample()
        if large_rules > pushes:
            out["large"] = _large(plane, client, ports[pushes:pushes + extra], ports[pushes + extra:],
                                  large_rules, pythonpath)
        out["load_after"] = _loadavg()
        return out
    finally:
        if client is not None:
            client.stop()
        plane.stop()


def _without_dataplane(took: list[float], applies: list[dict[str, Any]]) -> dict[str, Any]:
    """Push latency less the time the client's Forwarder.apply took for that push (from the client's log).

    Each push makes one delta, one version after the other, so the k-th delta applied is the k-th push.
    """
    deltas = sorted((a for a in applies if a["kind"] == "delta"), key=lambda a: a["version"])
    if len(deltas) < len(took):
        return {}
    dataplane = [a["dataplane_ms"] / 1000 for a in deltas[:len(took)]]
    rest = [t - d for t, d in zip(took, dataplane, strict=True)]
    first, last = summarise_ms(rest[:100]), summarise_ms(rest[-100:])
    return {"dataplane_first_100": summarise_ms(dataplane[:100]), "dataplane_last_100": summarise_ms(dataplane[-100:]),
            "without_dataplane_first_100": first, "without_dataplane_last_100": last,
            "without_dataplane_p99_last_over_first": ratio(last["p99_ms"], first["p99_ms"])}


def _client_applies(client: RealClient) -> list[dict[str, Any]]:
    """Every rule set the client applied, from its log: version, kind, apply ms, rule count."""
    out = []
    for _, msg in client.events("applied in"):
        m = _APPLIED.search(msg)
        if m:
            out.append({"version": int(m.group(1)), "kind": m.group(2), "apply_ms": float(m.group(3)),
                        "rules": int(m.group(4)), "dataplane_ms": float(m.group(5))})
    return out


def _large(plane: Plane, client: RealClient, offline_ports: list[int], push_ports: list[int], total: int,
           pythonpath: str | None) -> dict[str, Any]:
    """Rules added while the client is away, one full set when it returns, then pushes on top."""
    client.stop()
    wait_for(lambda: not plane.synced({"bench"}), 60, "client offline")
    stored = []
    for i, port in enumerate(offline_ports):
        s, status, body = plane.push("bench", f"big{i}", port, TARGET, wait=False)
        if status != 202:
            raise RuntimeError(f"offline push {i}: HTTP {status} {body}")
        stored.append(s)
    t0 = time.time()
    client.start(pythonpath)
    _wait_synced(plane, {"bench"}, SYNC_TIMEOUT_S, 0.1)
    view = next(c for c in plane.clients() if c["name"] == "bench")
    full_sync_s = time.time() - t0
    took, failures = _pushes(plane, [("bench", f"q{i}", port) for i, port in enumerate(push_ports)], 1)
    if failures:
        raise RuntimeError(f"{len(failures)} pushes at {total} rules failed, first: {failures[0]}")
    applies = [a for a in _client_applies(client) if a["rules"] >= total - 1]
    return {"rules": total, "active": view["rules"]["active"],
            "offline_post": summarise_ms(stored), "offline_post_first_100": summarise_ms(stored[:100]),
            "offline_post_last_100": summarise_ms(stored[-100:]),
            "full_sync_s_from_client_start": round(full_sync_s, 3),
            "full_apply_ms": next((a["apply_ms"] for a in applies if a["kind"] == "full"), None),
            "sequential": summarise_ms(took), "latency_s": _round(took),
            "client_apply_ms": summarise_ms([a["apply_ms"] / 1000 for a in applies if a["kind"] == "delta"]),
            "dataplane_apply_ms": summarise_ms([a["dataplane_ms"] / 1000 for a in applies if a["kind"] == "delta"]),
            "server": plane.sample()}


# ------------------------------------------------------------------ real clients through outages


def run_real(root: Path, *, clients: int, outages_s: list[float], pythonpath: str | None = None) -> dict[str, Any]:
    """`clients` real portunus-client processes: connect, one push each, then each outage in turn."""
    plane = Plane(root, pythonpath=pythonpath)
    fleet: list[RealClient] = []
    out: dict[str, Any] = {"clients": clients, "load_before": _loadavg()}
    try:
        plane.start()
        out["server_idle"] = plane.sample()
        names = [f"edge-{i:04d}" for i in range(clients)]
        fleet, enroll_s = enroll_clients(plane, names, root / "clients")
        out["enroll"] = summarise_s(enroll_s) | {"total_s": round(sum(enroll_s), 3)}
        t0 = time.time()
        for c in fleet:
            c.start(pythonpath)
        t_all = _wait_synced(plane, set(names), SYNC_TIMEOUT_S, 0.25)
        ups = [c.events("control stream", t0) for c in fleet]
        out["connect"] = {"all_s": round(t_all - t0, 3),
                          "per_client_s": summarise_s([e[0][0] - t0 for e in ups if e])}
        out["server_connected"] = plane.sample()
        out["clients_connected"] = sample_clients(fleet, plane.control_port)
        ports = free_port_block(clients)  # one host: each client's rule needs a port of its own
        took, failures = _pushes(plane, [(n, "r0", p) for n, p in zip(names, ports, strict=True)], 4)
        out["push"] = summarise_ms(took) | {"concurrency": 4, "failures": len(failures), "failed": failures[:5]}
        if failures:
            raise RuntimeError(f"{len(failures)} of {clients} pushes failed, first: {failures[0]}")
        out["outages"] = [_real_outage(plane, fleet, set(names), s) for s in outages_s]
        out["load_after"] = _loadavg()
        return out
    finally:
        for c in fleet:
            c.stop()
        plane.stop()


def _real_outage(plane: Plane, fleet: list[RealClient], names: set[str], outage_s: float) -> dict[str, Any]:
    log.info("real clients: %g s outage", outage_s)
    before = sample_clients(fleet, plane.control_port)
    plane.stop()
    t_down = time.time()
    time.sleep(outage_s / 2)
    during = sample_clients(fleet, plane.control_port)
    time.sleep(outage_s / 2)
    waited = sample_clients(fleet, plane.control_port)
    t_back = plane.start()
    t_all = _wait_synced(plane, names, SYNC_TIMEOUT_S, 0.1)
    server = plane.sample()
    resync, fast = [], 0
    for c in fleet:
        applied = c.events("full applied", t_down)
        if applied:
            resync.append(applied[0][0] - t_back)
        fast += len(c.events("reached", t_down))
    time.sleep(2.0)  # connections dialed during the outage would complete by now
    return {"outage_s": outage_s, "server_start_s": plane.start_s[-1],
            "server_back_to_all_synced_s": round(t_all - t_back, 3),
            "clients_cpu_s_while_down": round(waited["cpu_s_total"] - before["cpu_s_total"], 2),
            "resync_s": summarise_s(resync), "resync_from_logs": len(resync), "resync_each_s": _round(resync, 3),
            "peak_sessions_per_s": peak_rate_per_s([t_back + r for r in resync]),
            "fast_returns": fast, "clients_during_outage": during,
            "clients_after": sample_clients(fleet, plane.control_port), "server_after": server}


# ------------------------------------------------------------------ simulated fleets


def run_sim(root: Path, *, sizes: list[int], per_worker: int, concurrency: int, outages_s: list[float],
            pythonpath: str | None = None) -> dict[str, Any]:
    """For each fleet size in turn (stopping at the first that breaks): enroll, connect, push, outages."""
    out: dict[str, Any] = {"per_worker": per_worker, "push_concurrency": concurrency, "runs": []}
    for n in sizes:
        run_root = root / f"n{n}"
        try:
            result = _sim_run(run_root, n, per_worker, concurrency, outages_s, pythonpath)
        finally:
            shutil.rmtree(run_root / "uris", ignore_errors=True)
        out["runs"].append(result)
        if result.get("broke"):
            break
    return out


def _sim_run(root: Path, n: int, per_worker: int, concurrency: int, outages_s: list[float],
             pythonpath: str | None) -> dict[str, Any]:
    log.info("simulated fleet of %d", n)
    plane = Plane(root, pythonpath=pythonpath)
    workers: list[SimWorker] = []
    out: dict[str, Any] = {"clients": n, "load_before": _loadavg()}
    phase = "start"

    def step(name: str, fn: Callable[[], Any]) -> Any:
        nonlocal phase
        phase = name
        return fn()

    try:
        plane.start()
        out["server_idle"] = plane.sample()
        names = [f"sim-{i:05d}" for i in range(n)]
        t0 = time.perf_counter()
        uris = step("enrollment URIs", lambda: [(name, plane.enrollment_uri(name)) for name in names])
        out["uri_create_s"] = round(time.perf_counter() - t0, 3)
        (root / "uris").mkdir()
        t0 = time.perf_counter()
        for w in range(math.ceil(n / per_worker)):
            chunk = uris[w * per_worker:(w + 1) * per_worker]
            workers.append(SimWorker(chunk, root / "uris" / f"w{w}.json", plane.control_port,
                                     root / f"worker{w}.log", pythonpath))
        enrolled = step("enroll", lambda: [w.read("enrolled") for w in workers])
        failures = [f for w in workers for f in w.enroll_failures]
        out["enroll"] = {"wall_s": round(time.perf_counter() - t0, 3), "workers": len(workers),
                         "enrolled": sum(e["n"] for e in enrolled), "failures": len(failures),
                         "per_client_s": summarise_s([s for e in enrolled for s in e["enroll_s"]])}
        if failures:
            out["broke"] = f"enroll: {len(failures)} failed, first: {failures[0]['error']}"
            return out
        for w in workers:
            w.send("connect")
        t_connect = time.time()
        step("connect", lambda: [w.read("connecting") for w in workers])
        t_all = step("connect", lambda: _wait_synced(plane, set(names), SYNC_TIMEOUT_S, 1.0))
        reports = report_all(workers)
        firsts = [c["synced"][0][0] - t_connect for r in reports for c in r["clients"].values() if c["synced"]]
        out["connect"] = {"all_s": round(t_all - t_connect, 3), "per_client_s": summarise_s(firsts),
                          "peak_sessions_per_s": peak_rate_per_s([t_connect + f for f in firsts])}
        out["server_connected"] = plane.sample()
        out["workers_connected"] = _workers(reports)
        took, push_failures = step("push", lambda: _pushes(plane, [(name, "r0", 30000) for name in names],
                                                           concurrency))
        out["push"] = summarise_ms(took) | {"failures": len(push_failures), "latency_s": _round(took)}
        out["server_after_push"] = plane.sample()
        if push_failures:
            out["broke"] = f"push: {len(push_failures)} failed, first: {push_failures[0]}"
            return out
        out["outages"] = []
        for s in outages_s:
            out["outages"].append(step(f"{s:g} s outage", lambda s=s: _sim_outage(plane, workers, set(names), s)))
        out["load_after"] = _loadavg()
        return out
    except (TimeoutError, RuntimeError) as e:
        out["broke"] = f"{phase}: {e}"
        return out
    finally:
        for w in workers:
            w.close()
        plane.stop()


def _workers(reports: list[dict[str, Any]]) -> dict[str, Any]:
    return {"rss_total_mb": round(sum(r["rss_mb"] for r in reports), 1),
            "cpu_s_total": round(sum(r["cpu_s"] or 0.0 for r in reports), 2),
            "control_connections": sum(r["control_connections"] for r in reports),
            "clients": sum(len(r["clients"]) for r in reports)}


def _sim_outage(plane: Plane, workers: list[SimWorker], names: set[str], outage_s: float) -> dict[str, Any]:
    log.info("simulated fleet: %g s outage", outage_s)
    before = _workers(report_all(workers))
    plane.stop()
    t_down = time.time()
    time.sleep(outage_s)
    waited = _workers(report_all(workers))
    t_back = plane.start()
    t_all = _wait_synced(plane, names, SYNC_TIMEOUT_S, 0.5)
    server = plane.sample()
    reports = report_all(workers)
    resync = []
    for r in reports:
        for c in r["clients"].values():
            after = [ts for ts, _ in c["synced"] if ts > t_down]
            if after:
                resync.append(after[0] - t_back)
    return {"outage_s": outage_s, "server_start_s": plane.start_s[-1],
            "server_back_to_all_synced_s": round(t_all - t_back, 3),
            "workers_cpu_s_while_down": round(waited["cpu_s_total"] - before["cpu_s_total"], 2),
            "resync_s": summarise_s(resync), "resync_each_s": _round(resync, 3),
            "peak_sessions_per_s": peak_rate_per_s([t_back + x for x in resync]),
            "server_after": server, "workers_after": _workers(reports)}
