"""UDP at packet rate: `iperf3 -u` through each path at fixed offered datagram rates.

Paths (all on loopback, all forwarding 127.0.0.1:P -> the iperf3 server):

* direct:      no forwarder (the host's own ceiling: iperf3 sender and receiver)
* iptables:    kernel NAT (REDIRECT in nat OUTPUT), the harness's iptables path
* nginx:       NGINX stream, the harness's config (udp reuseport, worker_processes auto)
* standalone:  this checkout's `portunus-standalone`
* standalone_nogso / standalone_portable: the same with UDP GSO off / with
               one system call per datagram (PORTUNUS_DISABLE_UDP_GSO / _MMSG=1)
* before:      `portunus-standalone` running the `portunus/` package of another
               commit (--before-ref), extracted with `git archive` into a temp dir
               and put first on PYTHONPATH; the same venv, the same TOML

Every forwarder of a round is started once at the start of the round (an idle
forwarder costs nothing) and stopped at its end; each (datagram size, offered
rate) point then runs once through every path, in an order shuffled per point,
so slow drifts of a shared machine spread over all paths alike.

Per measurement: delivered datagrams/s (iperf3 receiver: packets - lost over
its interval), loss %, jitter, the sender's achieved rate, and the forwarder's
CPU seconds (process tree, /proc) per million delivered datagrams.

By default both iperf3 ends get a 4 MiB socket buffer (`-w`, = net.core.rmem_max
here): with the default 208 KiB the iperf3 receiver itself drops ~1-3% at 100k
datagrams/s of 64 B even on the direct path (pacing bursts), which would hide
the forwarder. A grid entry SIZE@0 measures with iperf3's defaults (as the
harness's `udp` experiment does).

    .venv/bin/python benchmarks/udp_pps.py --rounds 3 --json-out results/udp-pps/before.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness.errors import PathError  # noqa: E402
from harness.measure.sysinfo import collect_sysinfo  # noqa: E402
from harness.paths.base import ForwardPath, PathSetup  # noqa: E402
from harness.paths.direct import DirectPath  # noqa: E402
from harness.paths.iptables import IptablesPath  # noqa: E402
from harness.paths.nginx import NginxPath  # noqa: E402
from harness.paths.standalone import StandalonePath  # noqa: E402
from harness.site import procs  # noqa: E402 - after the sys.path line above
from harness.site.executor.local import LOCAL  # noqa: E402
from harness.site.netutil import LOOPBACK, free_port  # noqa: E402

SCHEMA_VERSION = 1  # format history: 1 = first version
# Loss at or above this is "not keeping up" when finding a path's max rate (issue 14).
LOSS_LIMIT_PCT = 1.0
# = net.core.rmem_max / wmem_max on this host; iperf3 -w sets SO_RCVBUF/SO_SNDBUF on both ends.
DEFAULT_WINDOW_BYTES = 4 << 20
READY_TIMEOUT_S = 30.0
# A forwarder that fell behind keeps sending queued datagrams (up to its 4 MiB
# buffers) after iperf3 ends; the next test's iperf3 server, on the same port,
# would take a stale datagram for its client. So before each test every
# forwarder must be idle: under QUIET_CPU_S of CPU in QUIET_WINDOW_S.
QUIET_WINDOW_S = 0.25
QUIET_CPU_S = 0.01
QUIET_TIMEOUT_S = 15.0
CLIENT_MARGIN_S = 20.0
# Offered rates: "150k" = 150,000 datagrams/s; "1000M" = 1000 Mbit/s of payload (iperf3 -b).
DEFAULT_GRID = ("64:25k,50k,100k,150k,200k,250k,300k 512:50k,100k,150k,200k 1400:500M,1000M,2000M "
                "1400@0:1000M,2000M")


class BeforePath(StandalonePath):
    """portunus-standalone importing `portunus` from an older checkout (PYTHONPATH first)."""

    name = "before"
    description = "portunus-standalone running the portunus/ package of --before-ref"
    env_overrides: ClassVar[dict[str, str]] = {}


class NoGsoPath(StandalonePath):
    name = "standalone_nogso"
    description = "portunus-standalone with PORTUNUS_DISABLE_UDP_GSO=1 (sendmmsg, one datagram per message)"
    env_overrides: ClassVar[dict[str, str]] = {"PORTUNUS_DISABLE_UDP_GSO": "1"}


class PortableIoPath(StandalonePath):
    name = "standalone_portable"
    description = "portunus-standalone with PORTUNUS_DISABLE_UDP_MMSG=1 (batched engine, one syscall per datagram)"
    env_overrides: ClassVar[dict[str, str]] = {"PORTUNUS_DISABLE_UDP_MMSG": "1"}


PATH_TYPES: dict[str, type[ForwardPath]] = {
    "direct": DirectPath, "iptables": IptablesPath, "nginx": NginxPath,
    "standalone": StandalonePath, "standalone_nogso": NoGsoPath, "standalone_portable": PortableIoPath,
    "before": BeforePath,
}


@dataclass(frozen=True)
class Point:
    """One offered load: datagram payload size and iperf3 -b."""

    size_bytes: int
    offered_bps: int
    window_bytes: int = DEFAULT_WINDOW_BYTES  # iperf3 -w on both ends; 0 = iperf3's default

    @property
    def offered_pps(self) -> float:
        return self.offered_bps / (8 * self.size_bytes)


def parse_grid(text: str) -> list[Point]:
    """'64:50k,100k 1400:1000M 1400@0:1000M' -> points.

    k = thousand datagrams/s, M = Mbit/s of payload; SIZE@W sets iperf3 -w to W bytes (0 = iperf3's default).
    """
    points = []
    for part in text.split():
        size_s, _, rates = part.partition(":")
        size_s, _, window_s = size_s.partition("@")
        size = int(size_s)
        window = int(window_s) if window_s else DEFAULT_WINDOW_BYTES
        for r in rates.split(","):
            m = re.fullmatch(r"(\d+(?:\.\d+)?)([kM])", r.strip())
            if not m:
                raise SystemExit(f"--grid: bad rate {r!r} in {part!r} (use e.g. 150k or 1000M)")
            value, unit = float(m.group(1)), m.group(2)
            bps = value * 1e3 * size * 8 if unit == "k" else value * 1e6
            points.append(Point(size, int(round(bps)), window))
    return points


def parse_iperf_udp(text: str) -> dict[str, Any]:
    """Receiver-side datagram counts of an `iperf3 -u -J` client report."""
    doc = json.loads(text)
    if doc.get("error"):
        raise RuntimeError(f"iperf3: {doc['error']}")
    end = doc["end"]
    sent, recv = end["sum_sent"], end["sum_received"]
    delivered = recv["packets"] - recv["lost_packets"]
    seconds = float(recv["seconds"])
    return {
        "sent_packets": int(sent["packets"]),
        "sent_pps": sent["packets"] / float(sent["seconds"]),
        "delivered_packets": int(delivered),
        "delivered_pps": delivered / seconds if seconds > 0 else 0.0,
        "receiver_bytes": int(recv["bytes"]),
        "receiver_mbps": recv["bits_per_second"] / 1e6,
        "lost_pct": float(recv["lost_percent"]),
        "jitter_ms": float(recv["jitter_ms"]),
        "seconds": seconds,
    }


def export_tree(ref: str, dest: Path) -> str:
    """Extract portunus/ of git ref into dest; return the full commit id."""
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", ref], check=True, capture_output=True,
                            text=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", commit, "portunus"],
                             check=True, capture_output=True).stdout
    tar_path = dest / "tree.tar"
    tar_path.write_bytes(archive)
    with tarfile.open(tar_path) as tf:
        tf.extractall(dest, filter="data")
    tar_path.unlink()
    return commit


def check_import_origin(tree: Path) -> None:
    """Make sure PYTHONPATH=tree makes the venv's python import portunus from tree, not the checkout."""
    out = subprocess.run([sys.executable, "-c", "import portunus; print(portunus.__file__)"],
                         env={**os.environ, "PYTHONPATH": str(tree)}, capture_output=True, text=True, check=True,
                         cwd="/")  # `-c` puts the cwd first on sys.path; a console script does not
    if not out.stdout.strip().startswith(str(tree)):
        raise SystemExit(f"PYTHONPATH={tree} does not take precedence: portunus came from {out.stdout.strip()}")


@contextmanager
def open_paths(names: list[str], target_port: int, workdir: Path) -> Iterator[dict[str, list[Any]]]:
    """Start every path, forwarding to target_port; yield {name: [path, endpoint, setup]}; stop all on exit."""
    started: dict[str, list[Any]] = {}
    try:
        for name in names:
            path = PATH_TYPES[name]()
            d = workdir / name
            d.mkdir(parents=True, exist_ok=True)
            setup = PathSetup(target_port=target_port, workdir=d, alloc_port=free_port, protocol="udp")
            started[name] = [path, None, setup]
            started[name][1] = path.start(setup)
            path.ready(READY_TIMEOUT_S)
        yield started
    finally:
        for path, _ep, _setup in started.values():
            path.stop()


def ensure_up(entry: list[Any]) -> None:
    """Restart a path whose state vanished: on a shared host another run's cleanup may
    remove our iptables chain (ready() checks the NAT rules are still there)."""
    path, _ep, setup = entry
    if not isinstance(path, IptablesPath):
        return
    try:
        path.ready(READY_TIMEOUT_S)
    except PathError:
        path.stop()
        entry[1] = path.start(setup)
        path.ready(READY_TIMEOUT_S)


def run_iperf(host: str, port: int, target_port: int, point: Point, seconds: int, omit_s: int,
              log_path: Path) -> str:
    """One `iperf3 -s -1` on target_port and one `iperf3 -c -u` to host:port; returns the client's JSON."""
    server = procs.spawn(["iperf3", "-s", "-1", "-B", LOOPBACK, "-p", str(target_port)], log_path=log_path)
    try:
        LOCAL.wait_listening(target_port, server, 10.0)
        argv = ["iperf3", "-c", host, "-p", str(port), "-u", "-b", str(point.offered_bps), "-l",
                str(point.size_bytes), "-t", str(seconds), "-O", str(omit_s), "-J", "--connect-timeout", "5000"]
        if point.window_bytes:
            argv += ["-w", str(point.window_bytes)]
        client = procs.spawn(argv, capture=True)
        try:
            out, err = client.communicate(timeout=seconds + omit_s + CLIENT_MARGIN_S)
        finally:
            procs.stop(client)
        if not out.strip():
            raise RuntimeError(f"iperf3 client exited {client.returncode}: {err.decode(errors='replace')[-300:]}")
        return out.decode()
    finally:
        procs.stop(server)


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped at UDP sockets bound to port (all of them: nginx has one per
    worker), from the `drops` column of /proc/net/udp and udp6: where a forwarder's input overflowed."""
    total = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            with open(table) as f:
                rows = f.readlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if int(cols[1].rsplit(":", 1)[1], 16) == port:
                total += int(cols[-1])
    return total


def wait_quiet(pids: list[int]) -> float:
    """Wait until the forwarders use (almost) no CPU; return the seconds waited."""
    start = time.monotonic()
    last = [LOCAL.tree_cpu_seconds(p) or 0.0 for p in pids]
    while pids and time.monotonic() - start < QUIET_TIMEOUT_S:
        time.sleep(QUIET_WINDOW_S)
        now = [LOCAL.tree_cpu_seconds(p) or 0.0 for p in pids]
        if sum(now) - sum(last) < QUIET_CPU_S:
            break
        last = now
    return time.monotonic() - start


def measure(name: str, path: ForwardPath, ep: Any, target_port: int, point: Point, args: argparse.Namespace,
            rnd: int, workdir: Path) -> dict[str, Any]:
    """One iperf3 run through one path; a failure becomes a record with `error`."""
    rec: dict[str, Any] = {"path": name, "round": rnd, "size_bytes": point.size_bytes,
                           "offered_bps": point.offered_bps, "offered_pps": round(point.offered_pps, 1),
                           "window_bytes": point.window_bytes,
                           "started_at": time.time(), "loadavg_1m": os.getloadavg()[0]}
    pids = path.forwarder_pids()
    try:
        before = [LOCAL.tree_cpu_seconds(p) for p in pids]
        drops_before = udp_drops(ep.port) if pids else 0
        raw = run_iperf(ep.host, ep.port, target_port, point, args.seconds, args.omit, workdir / "iperf3-server.log")
        after = [LOCAL.tree_cpu_seconds(p) for p in pids]
        rec.update(parse_iperf_udp(raw))
        if pids:  # lost at the forwarder's listening socket (it fell behind) vs. elsewhere (the receiver)
            rec["forwarder_listen_drops"] = udp_drops(ep.port) - drops_before
        if pids:
            cpu_s = sum(a - b for a, b in zip(after, before, strict=True) if a is not None and b is not None)
            rec["forwarder_cpu_s"] = cpu_s
            # CPU over the whole run (omit included) per datagram the run delivered (omit included, estimated
            # from the measured interval's rate): seconds per million datagrams.
            total_dgrams = rec["delivered_pps"] * (args.seconds + args.omit)
            rec["cpu_s_per_mdgram"] = cpu_s / total_dgrams * 1e6 if total_dgrams else None
        rec["raw"] = json.loads(raw) if args.keep_raw else None
    except Exception as e:  # one failed point must not end the run: record it
        rec["error"] = f"{type(e).__name__}: {e}"
    return rec


def _lost_at_forwarder_pct(recs: list[dict[str, Any]]) -> float | None:
    shares = [100 * r["forwarder_listen_drops"] / (r["sent_packets"] - r["delivered_packets"]) for r in recs
              if "forwarder_listen_drops" in r and r["sent_packets"] - r["delivered_packets"] > 0]
    return round(statistics.median(shares), 1) if shares else None


def summarise(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Per path, size and window: medians per offered rate, and the max delivered pps at < LOSS_LIMIT_PCT loss."""
    out: dict[str, Any] = {}
    keys = sorted({(r["path"], r["size_bytes"], r["window_bytes"]) for r in records})
    for path, size, window in keys:
        rows = []
        group = [r for r in records if (r["path"], r["size_bytes"], r["window_bytes"]) == (path, size, window)]
        for bps in sorted({r["offered_bps"] for r in group}):
            mine = [r for r in group if r["offered_bps"] == bps and "error" not in r]
            failed = sum(1 for r in group if r["offered_bps"] == bps and "error" in r)
            if not mine:
                continue
            cpu = [r["cpu_s_per_mdgram"] for r in mine if r.get("cpu_s_per_mdgram") is not None]
            rows.append({
                "offered_bps": bps, "offered_pps": round(bps / (8 * size)), "n": len(mine), "n_failed": failed,
                "delivered_pps_median": round(statistics.median(r["delivered_pps"] for r in mine)),
                "delivered_pps_min": round(min(r["delivered_pps"] for r in mine)),
                "delivered_pps_max": round(max(r["delivered_pps"] for r in mine)),
                "delivered_pct_of_offered": round(100 * statistics.median(r["delivered_pps"] for r in mine)
                                                  / (bps / (8 * size)), 2),
                "sent_pps_median": round(statistics.median(r["sent_pps"] for r in mine)),
                "lost_pct_median": round(statistics.median(r["lost_pct"] for r in mine), 3),
                "lost_pct_max": round(max(r["lost_pct"] for r in mine), 3),
                "cpu_s_per_mdgram_median": round(statistics.median(cpu), 3) if cpu else None,
                # Of the datagrams lost, the share the forwarder's own listening socket dropped.
                "lost_at_forwarder_pct_median": _lost_at_forwarder_pct(mine),
            })
        ok = [row for row in rows if row["lost_pct_median"] < LOSS_LIMIT_PCT]
        best = max(ok, key=lambda row: row["delivered_pps_median"], default=None)
        out[f"{path}/{size}/w{window}"] = {"path": path, "size_bytes": size, "window_bytes": window, "rates": rows,
                                 "max_pps_below_1pct_loss": best["delivered_pps_median"] if best else None,
                                 "at_offered_pps": best["offered_pps"] if best else None}
    return out


def print_table(summary: dict[str, Any]) -> None:
    for entry in summary.values():
        print(f"{entry['path']:>10} {entry['size_bytes']:>5} B -w {entry['window_bytes']}: max pps at <1% loss: "
              f"{entry['max_pps_below_1pct_loss']}")
        for row in entry["rates"]:
            cpu = row["cpu_s_per_mdgram_median"]
            print(f"{'':>18} offered {row['offered_pps']:>8} pps: delivered {row['delivered_pps_median']:>8} "
                  f"({row['delivered_pct_of_offered']:6.2f}%) loss {row['lost_pct_median']:7.3f}% "
                  f"(max {row['lost_pct_max']:.3f}) sent {row['sent_pps_median']:>8}"
                  + (f" cpu {cpu:.2f} s/Mdgram" if cpu is not None else ""))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--paths", default="direct,iptables,nginx,standalone")
    ap.add_argument("--grid", default=DEFAULT_GRID, help=f"size:rates ... (default {DEFAULT_GRID!r})")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=3)
    # iperf3's UDP loss figures go wrong after an -O reset when the receiver lags (negative
    # "delivered", loss above 100%): count from the first datagram instead.
    ap.add_argument("--omit", type=int, default=0)
    ap.add_argument("--before-ref", help="git ref whose portunus/ the 'before' path runs")
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--keep-raw", action="store_true", help="store each iperf3 JSON report in the file")
    ap.add_argument("--json-out", type=Path, required=True)
    ap.add_argument("--note", default="", help="free text stored in the file (e.g. what else ran on the host)")
    args = ap.parse_args()

    names = [n.strip() for n in args.paths.split(",") if n.strip()]
    unknown = [n for n in names if n not in PATH_TYPES]
    if unknown:
        raise SystemExit(f"--paths: unknown {unknown} (known: {', '.join(PATH_TYPES)})")
    if "before" in names and not args.before_ref:
        raise SystemExit("--paths before needs --before-ref")
    points = parse_grid(args.grid)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    rng = random.Random(args.seed)
    workdir = Path(tempfile.mkdtemp(prefix="portunus-udp-pps-"))
    meta: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                            "argv": sys.argv, "paths": names, "rounds": args.rounds, "seconds": args.seconds,
                            "omit_seconds": args.omit,
                            "loss_limit_pct": LOSS_LIMIT_PCT, "grid": [asdict(p) for p in points],
                            "note": args.note, "sysinfo": collect_sysinfo()}
    records: list[dict[str, Any]] = []
    try:
        if "before" in names:
            tree = workdir / "before-tree"
            tree.mkdir()
            meta["before_commit"] = export_tree(args.before_ref, tree)
            check_import_origin(tree)
            BeforePath.env_overrides = {"PYTHONPATH": str(tree)}
        for rnd in range(args.rounds):
            target_port = free_port()
            with open_paths(names, target_port, workdir / f"round{rnd}") as paths:
                for point in rng.sample(points, len(points)):
                    for name in rng.sample(names, len(names)):
                        ensure_up(paths[name])
                        path, ep, _setup = paths[name]
                        wait_quiet([p for pa, _e, _s in paths.values() for p in pa.forwarder_pids()])
                        rec = measure(name, path, ep, target_port, point, args, rnd, workdir)
                        records.append(rec)
                        print(f"round {rnd} {name:>10} {point.size_bytes:>5} B -w {point.window_bytes:>7} "
                              f"{point.offered_pps:>9.0f} pps: "
                              + (rec.get("error") or f"delivered {rec['delivered_pps']:9.0f} pps "
                                 f"loss {rec['lost_pct']:6.2f}%"
                                 + (f" cpu {rec['cpu_s_per_mdgram']:.2f} s/Mdgram"
                                    if rec.get("cpu_s_per_mdgram") is not None else "")), flush=True)
    except KeyboardInterrupt:
        meta["interrupted"] = True
    finally:
        summary = summarise(records)
        meta["loadavg_end"] = os.getloadavg()
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps({**meta, "summary": summary, "records": records}, indent=1) + "\n")
        shutil.rmtree(workdir, ignore_errors=True)
    print_table(summary)
    print(f"wrote {args.json_out}")
    return 130 if meta.get("interrupted") else 0


if __name__ == "__main__":
    sys.exit(main())
