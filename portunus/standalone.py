"""`portunus-standalone`: run the rules of a TOML file.

    portunus-standalone --config FILE [--check] [--metrics-addr HOST:PORT]
    portunus-standalone stats [--once] [--metrics-addr HOST:PORT] [--interval-secs N]   (live view on a terminal)

Exit codes: 0 ok (also after a SIGINT/SIGTERM drain), 1 a rule or the metrics
endpoint cannot bind at start, 2 bad config or usage.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from portunus.config import Config, ConfigError, QuotaSpec, load_config
from portunus.dataplane import BindError, Forwarder, open_forwarder, tune_process
from portunus.metrics import make_registry
from portunus.quota import TICK_S, QuotaKeeper
from portunus.runtime import (
    block_runtime_signals,
    freeze_startup_objects,
    parse_host_port,
    serve_metrics,
    setup_logging,
    stop_data_plane,
    wait_signal,
)
from portunus.stats_view import run_live

log = logging.getLogger("portunus.standalone")

DEFAULT_STATS_ADDR = "127.0.0.1:9464"  # Prometheus' conventional exporter port range


def _run_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="portunus-standalone",
        description="Userspace TCP/UDP port forwarder driven by a static TOML rule file. "
        "SIGHUP reloads the file (a bad file keeps the running rules); SIGINT/SIGTERM stop "
        "accepting, drain open connections for [global] shutdown_drain_secs, then exit 0. "
        "Set PORTUNUS_DISABLE_SPLICE=1 to force the userspace copy path.",
        epilog="Subcommand: 'portunus-standalone stats --once' prints per-rule counters of a "
        "running instance as JSON (see 'portunus-standalone stats --help').",
    )
    p.add_argument("--config", "-c", required=True, metavar="FILE", help="TOML rule file")
    p.add_argument("--check", action="store_true",
                   help="validate the file and exit: prints 'ok' (exit 0) or one 'error: ...' line per problem (exit 2)")
    p.add_argument("--metrics-addr", metavar="HOST:PORT",
                   help="serve Prometheus /metrics, JSON /stats and /healthz here (default: off)")
    return p


def _stats_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="portunus-standalone stats",
                                description="Per-rule counters of a running portunus-standalone, read from its "
                                "--metrics-addr endpoint. On a terminal: a live view (per rule: in/out rate, "
                                "connections, UDP flows, errors) redrawn each interval; q or Ctrl-C quits. "
                                "--once prints one JSON snapshot; piped, one JSON line per interval.")
    p.add_argument("--metrics-addr", default=DEFAULT_STATS_ADDR, metavar="HOST:PORT",
                   help=f"the instance's --metrics-addr (default {DEFAULT_STATS_ADDR})")
    p.add_argument("--once", action="store_true", help="print one JSON snapshot and exit")
    p.add_argument("--interval-secs", type=float, default=1.0, help="seconds between refreshes without --once")
    return p


def _fetch_stats(addr: str) -> dict:
    host, port = parse_host_port(addr, "--metrics-addr")
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/stats"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def stats_main(argv: Sequence[str]) -> int:
    args = _stats_parser().parse_args(argv)
    try:
        parse_host_port(args.metrics_addr, "--metrics-addr")
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not args.interval_secs > 0:
        print(f"error: --interval-secs must be > 0 (got {args.interval_secs:g})", file=sys.stderr)
        return 2
    try:
        while True:
            try:
                snap = _fetch_stats(args.metrics_addr)
            except (urllib.error.URLError, OSError, ValueError) as e:
                print(f"error: cannot read stats from {args.metrics_addr}: {getattr(e, 'reason', e)} "
                      "(is portunus-standalone running with --metrics-addr?)", file=sys.stderr)
                return 1
            if not args.once and sys.stdout.isatty() and sys.stdin.isatty():
                return run_live(lambda: _fetch_stats(args.metrics_addr), args.metrics_addr, args.interval_secs)
            print(json.dumps(snap, sort_keys=True))
            if args.once:
                return 0
            sys.stdout.flush()  # piped: one JSON line per interval, as before the live view
            time.sleep(args.interval_secs)
    except KeyboardInterrupt:
        return 0


def _report_config_error(e: ConfigError) -> None:
    for line in e.problems:
        print(f"error: {line}", file=sys.stderr)


def quota_specs(config: Config) -> dict[str, QuotaSpec]:
    return {o.name: o.quota for o in config.owners if o.quota is not None}


def _reload(fwd: Forwarder, path: str, current: Config, keeper: QuotaKeeper) -> Config:  # or a WorkerGroup
    try:
        new = load_config(path)
    except ConfigError as e:
        for line in e.problems:
            log.error("reload rejected, keeping %d running rule(s): %s", len(current.rules), line)
        return current
    try:
        fwd.apply(new.rules, new.owners, atomic=True)
    except BindError as e:
        for name, reason in e.failures.items():
            log.error('reload rejected, keeping running rules: rule "%s": %s', name, reason)
        return current
    keeper.configure(quota_specs(new))
    setup_logging(new.settings.log_level, new.settings.log_format, new.settings.label)
    if new.settings.workers != current.settings.workers:
        log.warning("reload: [global] workers changed from %d to %d; this takes a restart",
                    current.settings.workers, new.settings.workers)
    if new.settings.quota_state_file != current.settings.quota_state_file:
        log.warning("reload: [global] quota_state_file changed; usage is still kept in %s until a restart",
                    keeper.path)
    log.info("reloaded %s: %d rule(s)", path, len(new.rules))
    return new


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as e:
        _report_config_error(e)
        return 2
    if args.metrics_addr:
        try:
            parse_host_port(args.metrics_addr, "--metrics-addr")
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    if args.check:
        print("ok")
        return 0

    s = config.settings
    setup_logging(s.log_level, s.log_format, s.label)
    tune_process()
    block_runtime_signals()  # before any thread starts, so all inherit the mask
    fwd = open_forwarder(s.workers, log_settings=(s.log_level, s.log_format, s.label))
    try:
        fwd.apply(config.rules, config.owners, atomic=True)
    except BindError as e:
        for name, reason in e.failures.items():
            print(f'error: rule "{name}": {reason}', file=sys.stderr)
        fwd.close()
        return 1
    keeper = QuotaKeeper(fwd, Path(s.quota_state_file) if s.quota_state_file else None)
    keeper.configure(quota_specs(config))

    def snapshot() -> dict[str, Any]:
        snap = fwd.snapshot()
        if keeper.specs:
            snap["quotas"] = keeper.status()
        return snap

    server = None
    if args.metrics_addr:
        try:
            server = serve_metrics(args.metrics_addr, make_registry(snapshot), snapshot)
        except OSError as e:
            print(f"error: --metrics-addr {args.metrics_addr}: {e.strerror or e}", file=sys.stderr)
            fwd.close()
            return 1
    freeze_startup_objects()
    log.info("running %d rule(s) from %s (splice %s); %s%s", len(config.rules), args.config,
             "on" if fwd.splice_enabled else "off",
             f"{fwd.workers} worker processes" if hasattr(fwd, "workers") else "1 worker",
             f"; metrics on http://{args.metrics_addr}/metrics" if server else "")
    while True:
        sig = wait_signal(TICK_S if keeper.specs else None)
        if sig is None:
            keeper.tick()
            continue
        if sig == signal.SIGHUP:
            config = _reload(fwd, args.config, config, keeper)
            continue
        drain = config.settings.shutdown_drain_secs
        log.info("%s: stopped accepting; draining %d connection(s) for up to %g s",
                 signal.Signals(sig).name, fwd.active_connections(), drain)
        stop_data_plane(fwd, drain, keeper, server)
        log.info("stopped")
        return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "stats":
        return stats_main(argv[1:])
    args = _run_parser().parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
