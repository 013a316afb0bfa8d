"""Plots and a markdown summary of one fleet run, drawn from its saved JSON (measures nothing).

    python -m benchmarks.fleet.report results/fleet/<run>.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

from benchmarks.fleet.stats import percentile, summarise_ms

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)

# What issue 21 asks of a run.
MAX_P99_GROWTH = 1.5
MAX_RESYNC_AFTER_60S_S = 5.0


def _cdf(ax: Any, values: list[float], label: str) -> None:
    if not values:
        return
    xs = sorted(values)
    ax.step(xs, [(i + 1) / len(xs) for i in range(len(xs))], where="post", label=f"{label} (n={len(xs)})")


def plot_pushes(data: dict[str, Any], path: Path) -> None:
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4))
    lat = [x * 1000 for x in data["sequential"]["latency_s"]]
    a.plot(range(1, len(lat) + 1), lat, ".", ms=2, alpha=0.5, label="each push")
    window = 100
    p99 = [sorted(lat[max(0, i - window):i])[int(0.99 * (min(i, window) - 1))] for i in range(1, len(lat) + 1)]
    a.plot(range(1, len(lat) + 1), p99, "-", label=f"p99 of the last {window}")
    a.set(xlabel="push (= rules on the client)", ylabel="POST /v1/rules until acked (ms)",
          title="Sequential pushes to one client", yscale="log")
    a.legend()
    applies = [x for x in data.get("client_apply", []) if x["kind"] == "delta"]
    large = data.get("large") or {}
    b.plot([x["rules"] for x in applies], [x["apply_ms"] for x in applies], ".", ms=2, label="delta: whole apply")
    b.plot([x["rules"] for x in applies], [x.get("dataplane_ms", 0) or 1e-3 for x in applies], ".", ms=2,
           label="delta: Forwarder.apply")
    full = [x for x in data.get("client_apply", []) if x["kind"] == "full"]
    b.plot([x["rules"] for x in full], [x["apply_ms"] for x in full], "x", label="full set")
    if large.get("latency_s"):
        b.plot([large["rules"]] * len(large["latency_s"]), [x * 1000 for x in large["latency_s"]], "_", ms=8,
               label=f"push at {large['rules']} rules (POST, ms)")
    b.set(xlabel="rules on the client", ylabel="client apply (ms, from its log)", title="Where a push's time goes",
          xscale="log", yscale="log")
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_resync(scen: dict[str, Any], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4))
    for o in (scen.get("real") or {}).get("outages", []):
        _cdf(ax, o["resync_each_s"], f"{scen['real']['clients']} real, {o['outage_s']:g} s outage")
    for run in (scen.get("sim") or {}).get("runs", []):
        for o in run.get("outages", []):
            _cdf(ax, o["resync_each_s"], f"{run['clients']} simulated, {o['outage_s']:g} s outage")
    ax.axvline(MAX_RESYNC_AFTER_60S_S, color="grey", ls=":", label=f"{MAX_RESYNC_AFTER_60S_S:g} s")
    ax.set(xlabel="seconds from the server accepting again to the client's full set applied",
           ylabel="share of clients", title="Resync after a server outage")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_sim(sim: dict[str, Any], path: Path) -> None:
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(14, 4))
    for run in sim.get("runs", []):
        if run.get("push", {}).get("latency_s"):
            _cdf(a, [x * 1000 for x in run["push"]["latency_s"]], f"{run['clients']} clients")
    a.set(xlabel=f"POST /v1/rules until acked (ms), {sim.get('push_concurrency')} in flight", ylabel="share",
          title="One push to each simulated client")
    a.legend()
    labels, rss, fds = [], [], []
    for run in sim.get("runs", []):
        for key in ("server_idle", "server_connected", "server_after_push"):
            if run.get(key):
                labels.append(f"{run['clients']}\n{key.removeprefix('server_')}")
                rss.append(run[key]["rss_mb"] or 0)
                fds.append(run[key]["fds"] or 0)
    b.bar(labels, rss)
    b.set(title="Server RSS (MB)")
    c.bar(labels, fds, color="tab:orange")
    c.set(title="Server open fds")
    for ax in (b, c):
        ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**pass**" if ok else "**FAIL**")


def summarise_run(result: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(what, target, measured, ok) for each thing issue 21 asks a run to show."""
    s = result["scenarios"]
    rows: list[tuple[str, str, str, bool | None]] = []
    pushes = s.get("pushes") or {}
    seq = pushes.get("sequential")
    if seq:
        growth = seq["p99_last_over_first"]
        rows.append((f"{pushes['pushes']} sequential pushes to one client", f"last-100 p99 <= {MAX_P99_GROWTH}x "
                     "first-100 p99", f"{seq['first_100']['p99_ms']} -> {seq['last_100']['p99_ms']} ms "
                     f"({growth}x); p50 {seq['first_100']['p50_ms']} -> {seq['last_100']['p50_ms']} ms",
                     growth is not None and growth <= MAX_P99_GROWTH))
        if "without_dataplane_first_100" in seq:
            a, b = seq["without_dataplane_first_100"], seq["without_dataplane_last_100"]
            da, db = seq["dataplane_first_100"], seq["dataplane_last_100"]
            w = seq["without_dataplane_p99_last_over_first"]
            rows.append(("the same pushes, less the client's Forwarder.apply time",
                         f"(attribution) last-100 p99 <= {MAX_P99_GROWTH}x first-100 p99",
                         f"{a['p99_ms']} -> {b['p99_ms']} ms ({w}x); p50 {a['p50_ms']} -> {b['p50_ms']} ms. "
                         f"Forwarder.apply alone: p50 {da['p50_ms']} -> {db['p50_ms']} ms, p99 {da['p99_ms']} -> "
                         f"{db['p99_ms']} ms", w is not None and w <= MAX_P99_GROWTH))
    real = s.get("real") or {}
    for o in real.get("outages", []):
        after = o["clients_after"]
        rows.append((f"{real['clients']} real clients, {o['outage_s']:g} s outage",
                     f"all resynced within {MAX_RESYNC_AFTER_60S_S:g} s of the server back" if o["outage_s"] >= 60
                     else "all resynced", f"all synced after {o['server_back_to_all_synced_s']} s (per client p50 "
                     f"{o['resync_s'].get('p50_s')} s, max {o['resync_s'].get('max_s')} s); control connections "
                     f"{after['control_connections']} for {after['alive']} clients",
                     (o["server_back_to_all_synced_s"] <= MAX_RESYNC_AFTER_60S_S and
                      after["control_connections"] == real["clients"]) if o["outage_s"] >= 60 else
                     after["control_connections"] == real["clients"]))
    for run in (s.get("sim") or {}).get("runs", []):
        if run.get("broke"):
            rows.append((f"{run['clients']} simulated clients", "enroll + connect + one push each",
                         f"broke at {run['broke']}", None if run["clients"] > 1000 else False))
            continue
        srv = run["server_after_push"]
        rows.append((f"{run['clients']} simulated clients", "enroll + connect + one push each",
                     f"enroll {run['enroll']['wall_s']} s, connect all {run['connect']['all_s']} s, push p50 "
                     f"{run['push']['p50_ms']} / p99 {run['push']['p99_ms']} ms, server RSS {srv['rss_mb']} MB, "
                     f"{srv['fds']} fds", True))
    return rows


def _blocks(pushes: dict[str, Any], size: int = 100) -> list[list[Any]]:
    """Per block of `size` sequential pushes: latency p50/p90/p99/max and the client's apply time split."""
    took = pushes["sequential"]["latency_s"]
    deltas = sorted((a for a in pushes.get("client_apply", []) if a["kind"] == "delta"), key=lambda a: a["version"])
    rows = []
    for start in range(0, len(took), size):
        s = summarise_ms(took[start:start + size])
        block = deltas[start:start + size] if len(deltas) >= len(took) else []
        plane = [a["dataplane_ms"] for a in block]
        rest = [round(a["apply_ms"] - a["dataplane_ms"], 1) for a in block]
        rows.append([f"{start + 1}-{start + len(took[start:start + size])}", s["p50_ms"], s["p90_ms"], s["p99_ms"],
                     s["max_ms"], f"{percentile(plane, 50)} / {max(plane)}" if plane else "",
                     f"{round(percentile(rest, 50), 1)} / {max(rest)}" if rest else ""])
    return rows


def _md_table(rows: list[list[Any]], head: list[str]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def render_markdown(result: dict[str, Any], plots: list[str]) -> str:
    h = result["host"]
    lines = [f"# Fleet benchmark {result['run']}", "",
             f"Commit {h.get('commit')}{' (dirty)' if h.get('dirty') else ''}, {h['cpus']} CPUs, kernel "
             f"{h['kernel']}, Python {h['python']}, grpcio {h['grpcio']}. {h['note']}.", "",
             "## What issue 21 asks", ""]
    lines += _md_table([[w, t, m, _verdict(ok)] for w, t, m, ok in summarise_run(result)],
                       ["Run", "Target", "Measured", "Verdict"])
    lines += ["", "Leaked control connections across outages are also checked by a test: "
              "`tests/portunus/control/test_e2e_reconnect.py`.", ""]
    s = result["scenarios"]
    if (p := s.get("pushes")) and "sequential" in p:
        lines += ["## Pushes to one client", ""]
        rows = [[k, v["n"], v["p50_ms"], v["p99_ms"], v["max_ms"]] for k, v in
                (("first 100", p["sequential"]["first_100"]), ("last 100", p["sequential"]["last_100"]),
                 ("all", p["sequential"]["all"]))]
        if (lg := p.get("large")) and lg.get("sequential"):
            rows.append([f"at {lg['rules']} rules", lg["sequential"]["n"], lg["sequential"]["p50_ms"],
                         lg["sequential"]["p99_ms"], lg["sequential"]["max_ms"]])
        lines += _md_table(rows, ["pushes", "n", "p50 ms", "p99 ms", "max ms"])
        if lg:
            lines += ["", f"At {lg['rules']} rules: {lg['offline_post']['n']} rules stored while the client was "
                      f"away (POST ?wait=false p50 {lg['offline_post_first_100']['p50_ms']} ms for the first 100, "
                      f"{lg['offline_post_last_100']['p50_ms']} ms for the last 100); the returning client took "
                      f"them as one full set in {lg['full_sync_s_from_client_start']} s from its start "
                      f"(apply {lg['full_apply_ms']} ms); client apply per delta at that size: p50 "
                      f"{lg['client_apply_ms'].get('p50_ms')} ms."]
        lines += ["", "Each block of 100 pushes (a growth with the rule count shows in every column; a burst "
                  "of a shared host shows in one block's p99 and max):", ""]
        lines += _md_table(_blocks(p), ["pushes", "p50 ms", "p90 ms", "p99 ms", "max ms",
                                        "client: Forwarder.apply p50 / max ms", "client: the rest p50 / max ms"])
        lines.append("")
    if (r := s.get("real")) and "connect" in r:
        lines += ["## Real clients", "",
                  f"{r['clients']} portunus-client processes: enrolled in {r['enroll']['total_s']} s, all "
                  f"online {r['connect']['all_s']} s after starting them; one push each ({r['push']['concurrency']} "
                  f"in flight): p50 {r['push']['p50_ms']} ms, p99 {r['push']['p99_ms']} ms. Server RSS "
                  f"{r['server_idle']['rss_mb']} MB idle, {r['server_connected']['rss_mb']} MB with all "
                  f"connected; clients {r['clients_connected']['rss_median_mb']} MB each (median).", ""]
        rows = [[o["outage_s"], o.get("server_start_s"), o["server_back_to_all_synced_s"], o["resync_s"].get("p50_s"),
                 o["resync_s"].get("max_s"), o["peak_sessions_per_s"], o["fast_returns"],
                 o.get("clients_cpu_s_while_down"), o["clients_during_outage"]["control_connections"],
                 o["clients_after"]["control_connections"], o["server_after"]["rss_mb"], o["server_after"]["fds"]]
                for o in r.get("outages", [])]
        lines += _md_table(rows, ["outage s", "server start s", "all synced s", "resync p50 s", "resync max s",
                                  "peak sessions/s", "fast returns", "clients' CPU s while down", "conns during",
                                  "conns after", "server RSS MB", "server fds"])
        lines += ["", "All synced: from the server's control port accepting again until every client has "
                  "acked its full set (server's view); resync: the same per client, from its own log; "
                  "fast returns: waits cut short because the channel reached the server again."]
        lines.append("")
    if sim := s.get("sim"):
        lines += ["## Simulated clients", "",
                  f"{sim.get('per_worker')} simulated clients per process (real TLS gRPC streams and the real "
                  "ControlClient; the data plane only records the rules; no last-known file).", ""]
        rows = []
        for run in sim.get("runs", []):
            if "connect" not in run:
                rows.append([run["clients"], run.get("broke", "")] + [""] * 9)
                continue
            outs = {o["outage_s"]: o for o in run.get("outages", [])}
            idle, conn, push = run["server_idle"], run["server_connected"], run["server_after_push"]
            rows.append([run["clients"], run["enroll"]["wall_s"], run["connect"]["all_s"],
                         run["connect"]["peak_sessions_per_s"], run["push"].get("p50_ms"), run["push"].get("p99_ms"),
                         f"{idle['rss_mb']} / {conn['rss_mb']} / {push['rss_mb']}", push["fds"],
                         f"{round(conn['cpu_s'] - idle['cpu_s'], 1)} / {round(push['cpu_s'] - conn['cpu_s'], 1)}",
                         " / ".join(f"{k:g} s: {o['server_back_to_all_synced_s']} (p50 {o['resync_s'].get('p50_s')}; "
                                    f"server start {o.get('server_start_s')} s)" for k, o in outs.items()),
                         run.get("broke", "")])
        lines += _md_table(rows, ["clients", "enroll s", "connect all s", "peak sessions/s", "push p50 ms",
                                  "push p99 ms", "server RSS MB idle / connected / after pushes", "server fds",
                                  "server CPU s enroll+connect / pushes", "outage: all synced after s", "broke"])
        lines.append("")
    lines += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(lines)


def render(path: Path) -> str:
    """Draw the plots of the run saved at `path` and write its markdown summary next to it; return the summary."""
    result = json.loads(path.read_text())
    stem = path.with_suffix("")
    plots = []
    s = result["scenarios"]
    if (p := s.get("pushes")) and "sequential" in p:
        plot_pushes(p, Path(f"{stem}-pushes.png"))
        plots.append(f"{stem.name}-pushes.png")
    if (s.get("real") or {}).get("outages") or any(r.get("outages") for r in (s.get("sim") or {}).get("runs", [])):
        plot_resync(s, Path(f"{stem}-resync.png"))
        plots.append(f"{stem.name}-resync.png")
    if (s.get("sim") or {}).get("runs"):
        plot_sim(s["sim"], Path(f"{stem}-sim.png"))
        plots.append(f"{stem.name}-sim.png")
    text = render_markdown(result, plots)
    path.with_suffix(".md").write_text(text)
    return text


if __name__ == "__main__":
    print(render(Path(sys.argv[1])))
