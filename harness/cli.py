"""`portunus-bench` (also `python -m harness`): the parser and the dispatch to one module per verb.

Each verb is a module of harness/commands/ with NAME, add_parser(sub) and
run(args, argv) -> exit code; VERBS lists them in `--help` order.

Exit codes: 0 ok; 1 some measurement failed; 2 usage, config, preflight or
result-file error (one `error:` message naming the fix); 128+N stopped by
signal N (130 for Ctrl-C) after a clean teardown.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from harness.commands import (
    baseline,
    cleanup,
    compare,
    gate,
    paths,
    plots,
    readme,
    report,
    run,
    sysinfo,
    validate,
)
from harness.errors import EXIT_USAGE, HarnessError

VERBS = (run, compare, report, plots, readme, sysinfo, cleanup, paths, validate, gate, baseline)


def build_parser() -> argparse.ArgumentParser:
    """`portunus-bench` with every verb's subparser."""
    p = argparse.ArgumentParser(
        prog="portunus-bench",
        description="Benchmark harness for Portunus: measures forwarding paths (direct, iptables REDIRECT, "
        "portunus-standalone, portunus-client, the C splice reference, and peers: HAProxy, NGINX stream, socat, "
        "rinetd, ...) over loopback or network namespaces, records every run in versioned result files, and "
        "renders reports. A config's kind says what is measured: headline / sweep / capped / ab / peers (TCP "
        "throughput, iperf3), udp (iperf3 -u in Mbit/s, or datagrams/s with offered_pps), latency and connrate "
        "(the harness's probe), http (wrk against nginx, keep-alive and one connection per request).",
        epilog="Exit codes: 0 ok, 1 a measurement failed, 2 usage/config/preflight error, "
        "130/143 stopped by SIGINT/SIGTERM (cleanly: rules removed, processes stopped, results kept).",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb in VERBS:
        verb.add_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse argv, run the verb, turn a HarnessError into `error: ...` and exit code 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    verbs = {verb.NAME: verb for verb in VERBS}
    try:
        return verbs[args.verb].run(args, argv)
    except HarnessError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:  # a Ctrl-C outside a run (preflight, report): nothing to clean up
        print("interrupted", file=sys.stderr)
        return 130
