"""What does SNI routing cost? Bulk throughput after the peek, setup time, probe CPU.

One `portunus-standalone` runs four rules: a plain rule and an SNI-routed
rule (pattern bench.example.com) in front of a bulk sink, and the same pair
in front of an ack sink. Every client connection starts with a real TLS
ClientHello for bench.example.com (made by Python's ssl module), so both
paths carry the same bytes and only the SNI listener reads and parses it.

* bulk: after the ClientHello, an iperf3-like sender writes 1 MiB chunks for
  --seconds; the sink reports the bytes it received after the first
  --omit-seconds and the time they took (receiver-side Mbit/s), and the
  forwarder's CPU seconds are read from /proc. The relay switches to splice
  on bulk reads on both paths. A second plain rule ("plain2") runs as an A/A
  control: its ratio to "plain" shows how far two identical paths drift apart
  in one run on this (shared) host.
* setup: sequential connections that send the ClientHello and wait for the
  sink's one-byte answer: time from connect() to that byte, p50 and p99, on
  the plain path, the SNI path and directly to the sink (no forwarder).
* probe CPU: the forwarder's CPU with 64 health-checked targets probed
  every second, minus the same forwarder idle without checks.

Paths are interleaved round by round in a shuffled order; the report is the
median per path (and min-max), the ratio SNI / plain of the medians, and the
median of the per-round ratios (each round's paths ran back to back, so a
slow drift of the host's load cancels out of them).

    python benchmarks/sni.py --rounds 7 --seconds 5 --omit-seconds 1 --json-out results/sni/sni.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.support.tls import client_hello  # noqa: E402  (the same first flight the SNI tests send)

# Result file format history:
#   1  bulk, setup and probe-cost records, summary with medians and ratios
FORMAT_VERSION = 1
SERVER_NAME = "bench.example.com"
CHUNK_BYTES = 1 << 20  # bulk writes and reads: like iperf3's large-buffer runs, few syscalls per GB
PROBE_TARGETS = 64     # health-checked targets for the probe-cost run (127.0.0.1 .. 127.0.0.64)
PROBE_INTERVAL_S = 1.0
PROBE_RUN_S = 20.0


# ---------------------------------------------------------------- sink (child process)


def serve_sinks(bulk_port: int, ack_port: int, omit_s: float, hello_len: int) -> None:
    """Bulk sink: reports received bytes after `omit_s` per connection (a JSON line on stdout).
    Ack sink: answers one byte once the ClientHello is in; a connection that sends nothing
    (a health probe) is just closed."""

    def listener(port: int, host: str = "0.0.0.0") -> socket.socket:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        s.listen(1024)
        return s

    lock = threading.Lock()

    def bulk(conn: socket.socket) -> None:
        buf = memoryview(bytearray(CHUNK_BYTES))
        total = 0
        first = mark_t = mark_bytes = None
        with conn:
            while True:
                n = conn.recv_into(buf)
                if not n:
                    break
                now = time.monotonic()
                total += n
                if first is None:
                    first = now
                elif mark_t is None and now - first >= omit_s:
                    mark_t, mark_bytes = now, total
            end = time.monotonic()
        if mark_t is not None and end > mark_t:
            with lock:
                print(json.dumps({"bytes": total - mark_bytes, "seconds": end - mark_t, "total_bytes": total}),
                      flush=True)

    def ack(conn: socket.socket) -> None:
        with conn:
            got = 0
            while got < hello_len:
                b = conn.recv(65536)
                if not b:
                    return
                got += len(b)
            conn.sendall(b"k")
            conn.recv(1)  # until the client closes

    def accept_loop(ls: socket.socket, handler: Any) -> None:
        while True:
            conn, _ = ls.accept()
            threading.Thread(target=handler, args=(conn,), daemon=True).start()

    threads = [threading.Thread(target=accept_loop, args=(listener(bulk_port), bulk), daemon=True),
               threading.Thread(target=accept_loop, args=(listener(ack_port), ack), daemon=True)]
    for t in threads:
        t.start()
    print("ready", flush=True)
    signal.sigwait({signal.SIGTERM, signal.SIGINT})


# ---------------------------------------------------------------- clients


def send_bulk(port: int, hello: bytes, seconds: float) -> None:
    """ClientHello, then 1 MiB chunks for `seconds`, then close (run in a child process)."""
    chunk = memoryview(bytes(CHUNK_BYTES))
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(hello)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            s.sendall(chunk)


def setup_times(port: int, hello: bytes, n: int) -> list[float]:
    """Microseconds from connect() to the sink's answer, for `n` sequential connections."""
    out = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(hello)
            if s.recv(1) != b"k":
                raise RuntimeError(f"port {port}: no answer from the ack sink")
            out.append((time.perf_counter_ns() - t0) / 1000)
    return out


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- processes


def free_port() -> int:
    from harness.site.netutil import free_port as pick

    return pick("127.0.0.1", socket.SOCK_STREAM)


def start_standalone(toml: str, work: Path, name: str) -> subprocess.Popen:
    path = work / f"{name}.toml"
    path.write_text(toml)
    exe = Path(sys.executable).parent / "portunus-standalone"
    proc = subprocess.Popen([str(exe), "--config", str(path)], stdout=subprocess.DEVNULL,
                            stderr=open(work / f"{name}.log", "wb"))  # noqa: SIM115 (lives as long as the process)
    deadline = time.monotonic() + 20
    while "running " not in (work / f"{name}.log").read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)  # never leave it behind
            raise RuntimeError(f"portunus-standalone did not start:\n{(work / f'{name}.log').read_text()}")
        time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rules_toml(ports: dict[str, int], bulk_port: int, ack_port: int) -> str:
    out = '[global]\nlog_level = "info"\n'
    for name, sink in (("plain-bulk", bulk_port), ("plain2-bulk", bulk_port), ("sni-bulk", bulk_port),
                       ("plain-ack", ack_port), ("sni-ack", ack_port)):
        out += (f'[[rule]]\nname = "{name}"\nlisten_addr = "127.0.0.1"\nlisten_port = {ports[name]}\n'
                f'target = "127.0.0.1:{sink}"\n')
        if name.startswith("sni"):
            out += f'sni_pattern = "{SERVER_NAME}"\n'
    return out


def probe_cost(work: Path, ack_port: int) -> dict[str, Any]:
    """Forwarder CPU per probe: 64 checked targets vs the same rule unchecked, PROBE_RUN_S each."""
    targets = ", ".join(f'{{host = "127.0.0.{i}", port = {ack_port}, priority = {i}}}'
                        for i in range(1, PROBE_TARGETS + 1))
    out: dict[str, Any] = {"targets": PROBE_TARGETS, "interval_s": PROBE_INTERVAL_S, "run_s": PROBE_RUN_S}
    for mode, extra in (("idle", ""), ("checked", f"health_check_interval_secs = {PROBE_INTERVAL_S}\n")):
        toml = (f'[global]\nlog_level = "info"\n[[rule]]\nname = "probed"\nlisten_addr = "127.0.0.1"\n'
                f'listen_port = {free_port()}\ntargets = [{targets}]\n{extra}')
        proc = start_standalone(toml, work, f"probe-{mode}")
        try:
            time.sleep(2.0)  # start-up and the first (spread) probes
            c0 = cpu_s(proc.pid)
            time.sleep(PROBE_RUN_S)
            out[f"{mode}_cpu_s"] = cpu_s(proc.pid) - c0
        finally:
            stop(proc)
    probes = PROBE_TARGETS * PROBE_RUN_S / PROBE_INTERVAL_S
    out["probes_estimated"] = probes
    out["cpu_us_per_probe"] = round((out["checked_cpu_s"] - out["idle_cpu_s"]) / probes * 1e6, 1)
    return out


def summarise(records: list[dict[str, Any]], key: str, digits: int = 1) -> dict[str, Any]:
    """n, median and min-max of `key` per path."""
    by: dict[str, list[float]] = {}
    for r in records:
        by.setdefault(r["path"], []).append(r[key])
    return {p: {"n": len(v), "median": round(statistics.median(v), digits), "min": round(min(v), digits),
                "max": round(max(v), digits)} for p, v in by.items()}


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from harness.sysinfo import collect_sysinfo

    hello = client_hello(SERVER_NAME)
    work = Path(tempfile.mkdtemp(prefix="portunus-sni-bench-"))
    bulk_port, ack_port = free_port(), free_port()
    sink = subprocess.Popen([sys.executable, __file__, "_sink", str(bulk_port), str(ack_port),
                             str(args.omit_seconds), str(len(hello))], stdout=subprocess.PIPE, text=True)
    procs: list[subprocess.Popen] = [sink]
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        ports = {name: free_port() for name in ("plain-bulk", "plain2-bulk", "sni-bulk", "plain-ack", "sni-ack")}
        fwd = start_standalone(rules_toml(ports, bulk_port, ack_port), work, "fwd")
        procs.append(fwd)
        rng = random.Random(args.seed)
        bulk: list[dict[str, Any]] = []
        setup: list[dict[str, Any]] = []
        for rnd in range(args.rounds):
            order = ["plain", "plain2", "sni"]
            rng.shuffle(order)
            for path in order:
                c0 = cpu_s(fwd.pid)
                sender = subprocess.Popen([sys.executable, __file__, "_send", str(ports[f"{path}-bulk"]),
                                           str(args.seconds)])
                sender.wait(args.seconds + 30)
                line = sink.stdout.readline()
                rec = json.loads(line)
                cpu = cpu_s(fwd.pid) - c0
                mbps = rec["bytes"] * 8 / rec["seconds"] / 1e6
                bulk.append({"round": rnd, "path": path, "receiver_mbps": round(mbps, 1),
                             "bytes_after_omit": rec["bytes"], "seconds_after_omit": round(rec["seconds"], 3),
                             "total_bytes": rec["total_bytes"], "forwarder_cpu_s": round(cpu, 3),
                             "cpu_s_per_gb": round(cpu / (rec["total_bytes"] / 1e9), 3)})
                print(f"round {rnd} bulk  {path:6s} {mbps:8.0f} Mbit/s  forwarder cpu {cpu:.2f} s", flush=True)
            order = ["plain", "sni", "direct"]
            rng.shuffle(order)
            for path in order:
                port = ack_port if path == "direct" else ports[f"{path}-ack"]
                samples = setup_times(port, hello, args.setup_connections)
                setup.append({"round": rnd, "path": path, "samples_us": [round(x, 1) for x in samples]})
                print(f"round {rnd} setup {path:6s} p50 {percentile(samples, 50):7.1f} us  "
                      f"p99 {percentile(samples, 99):7.1f} us", flush=True)
        stop(fwd)
        procs.remove(fwd)
        probes = probe_cost(work, ack_port) if not args.skip_probe_cost else None
    finally:
        for p in procs:
            stop(p)
        shutil.rmtree(work, ignore_errors=True)
    return {
        "format": FORMAT_VERSION, "kind": "sni-benchmark", "host": collect_sysinfo(),
        "params": {"rounds": args.rounds, "seconds": args.seconds, "omit_seconds": args.omit_seconds,
                   "setup_connections": args.setup_connections, "chunk_bytes": CHUNK_BYTES,
                   "client_hello_bytes": len(hello), "server_name": SERVER_NAME, "seed": args.seed,
                   "throughput": "receiver side, bytes after the omitted first seconds"},
        "bulk": bulk, "setup": setup, "probe_cost": probes,
        "summary": summarise_run(bulk, setup),
    }


def summarise_run(bulk: list[dict[str, Any]], setup: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary of a run's records (no I/O: `--resummarise` recomputes it from a saved file)."""
    bulk_summary = summarise(bulk, "receiver_mbps")
    cpu_summary = summarise(bulk, "cpu_s_per_gb", 3)
    setup_by: dict[str, list[float]] = {}
    for r in setup:
        setup_by.setdefault(r["path"], []).extend(r["samples_us"])
    setup_summary = {p: {"n": len(v), "p50_us": round(percentile(v, 50), 1), "p99_us": round(percentile(v, 99), 1)}
                     for p, v in setup_by.items()}
    ratio = bulk_summary["sni"]["median"] / bulk_summary["plain"]["median"]
    per_round: dict[str, list[float]] = {"sni": [], "plain2": []}
    for rnd in sorted({r["round"] for r in bulk}):
        got = {r["path"]: r["receiver_mbps"] for r in bulk if r["round"] == rnd}
        for path in per_round:
            per_round[path].append(got[path] / got["plain"])
    return {
        "bulk_mbps": bulk_summary,
        "sni_vs_plain_bulk_ratio": round(ratio, 3),
        "per_round_ratio_median": {f"{p}_vs_plain": round(statistics.median(v), 3) for p, v in per_round.items()},
        "per_round_ratios": {f"{p}_vs_plain": [round(x, 3) for x in v] for p, v in per_round.items()},
        "aa_control_ratio": round(bulk_summary["plain2"]["median"] / bulk_summary["plain"]["median"], 3),
        "bulk_target_ratio": 0.97,
        "bulk_meets_target": ratio >= 0.97,
        "forwarder_cpu_s_per_gb": cpu_summary,
        "sni_vs_plain_cpu_per_gb_ratio": round(cpu_summary["sni"]["median"] / cpu_summary["plain"]["median"], 3),
        "setup": setup_summary,
        "setup_added_by_peek_us": {q: round(setup_summary["sni"][f"{q}_us"] - setup_summary["plain"][f"{q}_us"], 1)
                                   for q in ("p50", "p99")},
    }


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_sink":
        serve_sinks(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "_send":
        send_bulk(int(sys.argv[2]), client_hello(SERVER_NAME), float(sys.argv[3]))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--omit-seconds", type=float, default=1.0)
    p.add_argument("--setup-connections", type=int, default=300)
    p.add_argument("--seed", type=int, default=17)
    p.add_argument("--skip-probe-cost", action="store_true")
    p.add_argument("--json-out", type=Path)
    p.add_argument("--resummarise", type=Path, metavar="FILE", help="recompute FILE's summary from its records")
    args = p.parse_args()
    if args.resummarise:
        result = json.loads(args.resummarise.read_text())
        if result.get("format") != FORMAT_VERSION:
            raise SystemExit(f"{args.resummarise}: format {result.get('format')!r}, this script reads {FORMAT_VERSION}")
        result["summary"] = summarise_run(result["bulk"], result["setup"])
        args.json_out = args.json_out or args.resummarise
    else:
        # SIGTERM unwinds like Ctrl-C: the finally blocks stop every process and remove the temp dir.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        result = run(args)
    s = result["summary"]
    print(json.dumps(s, indent=2))
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
