"""`portunus-client`: enroll with a server, then run the rules it pushes.

    portunus-client enroll URI --out bundle.json
    portunus-client --bundle bundle.json [--stats-report-interval-secs N] [--metrics-addr HOST:PORT]

Exit codes: 0 ok (also after a SIGINT/SIGTERM drain); 1 enrollment refused,
or the metrics endpoint cannot bind; 2 bad usage or an unusable bundle file.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from portunus.config import DEFAULT_SHUTDOWN_DRAIN_SECS, LOG_FORMATS, LOG_LEVELS
from portunus.runtime import (
    RUNTIME_SIGNALS,
    block_runtime_signals,
    freeze_startup_objects,
    parse_host_port,
    serve_metrics,
    setup_logging,
    stop_data_plane,
)

log = logging.getLogger("portunus.client")


def _enroll_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="portunus-client enroll",
                                description="Redeem a one-time enrollment URI (from POST /v1/client-enrollments): "
                                "pins the server certificate by the URI's SHA-256 fingerprint, creates this "
                                "client's key and writes the identity bundle (mode 0600).")
    p.add_argument("uri", help="portunus://HOST:PORT/enroll?v=1&secret=...&fp=sha256:...")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the bundle (JSON)")
    p.add_argument("--force", action="store_true", help="overwrite an existing bundle file")
    return p


def _run_parser() -> argparse.ArgumentParser:
    from portunus.control.client import DEFAULT_RECONNECT_MAX_S, DEFAULT_STATS_INTERVAL_S

    p = argparse.ArgumentParser(
        prog="portunus-client",
        description="Run the forwarding rules a portunus-server pushes, on the same data plane as "
        "portunus-standalone. Holds one TLS gRPC stream to the server (pinned certificate), verifies every "
        "signed rule set, acks each rule Active or Failed:reason, reports stats, and keeps forwarding while "
        "the server is away. SIGINT/SIGTERM drain open connections, then exit 0.",
        epilog="Subcommand: 'portunus-client enroll URI --out bundle.json' (see 'portunus-client enroll --help').")
    p.add_argument("--bundle", required=True, metavar="FILE", help="identity bundle written by 'enroll'")
    p.add_argument("--stats-report-interval-secs", type=float, default=DEFAULT_STATS_INTERVAL_S, metavar="N",
                   help=f"seconds between stats reports to the server (default {DEFAULT_STATS_INTERVAL_S:g})")
    p.add_argument("--metrics-addr", metavar="HOST:PORT",
                   help="serve Prometheus /metrics, JSON /stats and /healthz here (default: off)")
    p.add_argument("--state-file", metavar="FILE",
                   help="where the last-known signed rule set is kept, so a restart while the server is "
                   "down forwards at once (default: BUNDLE.ruleset.jsonl)")
    p.add_argument("--quota-state-file", metavar="FILE",
                   help="where the usage of traffic quotas is kept, so a restart continues the count "
                   "(default: BUNDLE.quota.json)")
    p.add_argument("--reconnect-max-secs", type=float, default=DEFAULT_RECONNECT_MAX_S, metavar="N",
                   help=f"ceiling of the reconnect backoff (default {DEFAULT_RECONNECT_MAX_S:g})")
    p.add_argument("--shutdown-drain-secs", type=float, default=DEFAULT_SHUTDOWN_DRAIN_SECS, metavar="N",
                   help=f"how long SIGTERM waits for open connections (default {DEFAULT_SHUTDOWN_DRAIN_SECS:g})")
    p.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    p.add_argument("--log-format", choices=LOG_FORMATS, default="pretty")
    return p


def enroll_main(argv: Sequence[str]) -> int:
    from portunus.control.bundle import dump_bundle
    from portunus.control.client import EnrollError, enroll

    args = _enroll_parser().parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.force:
        print(f"error: {out} exists; pass --force to overwrite it", file=sys.stderr)
        return 2
    try:
        bundle = enroll(args.uri)
    except EnrollError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    dump_bundle(out, bundle)
    print(f"enrolled as {bundle.client} with {bundle.endpoint} ({bundle.server_fingerprint}); bundle written to {out}")
    return 0


async def _serve(control: object, stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: log.info("SIGHUP ignored (rules come from the server)"))
    await control.run(stop)  # type: ignore[attr-defined]


def run(args: argparse.Namespace) -> int:
    from portunus.control.bundle import BundleFileError, load_bundle
    from portunus.control.client import ClientOptions, ControlClient
    from portunus.control.lastknown import LastKnown, default_path
    from portunus.dataplane import Forwarder, tune_process
    from portunus.quota import QuotaKeeper

    try:
        bundle = load_bundle(args.bundle)
    except BundleFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.metrics_addr:
        try:
            parse_host_port(args.metrics_addr, "--metrics-addr")
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if args.stats_report_interval_secs <= 0 or args.reconnect_max_secs <= 0:
        print("error: --stats-report-interval-secs and --reconnect-max-secs must be > 0", file=sys.stderr)
        return 2
    setup_logging(args.log_level, args.log_format, f"portunus-client[{bundle.client}]")
    tune_process()
    # The forwarder's threads (acceptor, connections, UDP) and the thread that
    # applies rule sets are started with the runtime signals blocked, so
    # SIGTERM/SIGINT always land on the event loop's thread.
    block_runtime_signals()
    fwd = Forwarder()
    apply_executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="apply")
    apply_executor.submit(lambda: None).result()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, RUNTIME_SIGNALS)

    options = ClientOptions(stats_interval_s=args.stats_report_interval_secs,
                            reconnect_max_s=args.reconnect_max_secs)
    last_known = LastKnown(Path(args.state_file) if args.state_file else default_path(args.bundle), bundle)
    quota_path = Path(args.quota_state_file) if args.quota_state_file else Path(str(args.bundle) + ".quota.json")
    keeper = QuotaKeeper(fwd, quota_path)
    control = ControlClient(bundle, fwd, options, apply_executor, last_known, keeper)
    apply_executor.submit(control.restore).result()  # on the thread that applies rule sets (signals blocked)
    freeze_startup_objects()
    server = None
    if args.metrics_addr:
        try:
            server = serve_metrics(args.metrics_addr, control.metrics.registry, control.stats)
        except OSError as e:
            print(f"error: --metrics-addr {args.metrics_addr}: {e.strerror or e}", file=sys.stderr)
            fwd.close()
            return 1
    log.info("client %s starting: server %s (%s), splice %s%s", bundle.client, bundle.endpoint,
             bundle.server_fingerprint, "on" if fwd.splice_enabled else "off",
             f", metrics on http://{args.metrics_addr}/metrics" if server else "")
    stop = asyncio.Event()
    try:
        asyncio.run(_serve(control, stop))
    finally:
        log.info("stopping: draining %d connection(s) for up to %g s", fwd.active_connections(),
                 args.shutdown_drain_secs)
        stop_data_plane(fwd, args.shutdown_drain_secs, keeper, server)
        apply_executor.shutdown(wait=False)
    log.info("stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "enroll":
        return enroll_main(argv[1:])
    return run(_run_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
