"""`portunus-bench cleanup`: chains, tables, namespaces and scratch dirs left by killed runs."""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness.errors import EXIT_OK

NAME = "cleanup"


def add_parser(sub: Any) -> None:
    """The verb's subparser: arguments, help and description."""
    cln = sub.add_parser("cleanup", help="remove leftovers of killed runs (iptables chains, nft tables, "
                         "network namespaces, scratch dirs)",
                         description="Remove PORTUNUS-BENCH-<pid> chains from the nat table (and their jumps), "
                         "`ip PORTUNUS_BENCH_<pid>` nftables tables, network namespaces carrying the harness's "
                         "owner mark (with their veths and any process still inside) "
                         "whose harness process is gone, and scratch directories of dead runs. "
                         "Running harnesses are left alone unless --all (their namespaces always: "
                         "a running harness removes them itself when it stops). --pid PID removes only what "
                         "the harness with that pid made, whether it still runs or not.")
    which = cln.add_mutually_exclusive_group()
    which.add_argument("--all", action="store_true", help="also remove chains, tables and scratch dirs of harness "
                       "processes still running (on a shared host: other users' runs too)")
    which.add_argument("--pid", type=int, metavar="PID", help="remove only the chains, tables and scratch dirs of "
                       "the harness with this pid, running or not")


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Remove what killed runs left behind; print what was removed."""
    from harness.measure.runner import WORKDIR_PREFIX
    from harness.paths import iptables as ipt
    from harness.paths import nftables as nft
    from harness.site import procs

    av = ipt.iptables_available()
    if av.ok:
        removed = ipt.cleanup_leftovers(include_live=args.all, pid=args.pid)
        print(f"iptables: removed {len(removed)} chain(s){': ' + ', '.join(removed) if removed else ''}")
    else:
        print(f"iptables: not checked ({av.reason})")
    av = nft.nftables_available()
    if av.ok:
        removed = nft.cleanup_leftovers(include_live=args.all, pid=args.pid)
        print(f"nftables: removed {len(removed)} table(s){': ' + ', '.join(removed) if removed else ''}")
    else:
        print(f"nftables: not checked ({av.reason})")
    from harness.site.topology import netns as tnetns

    why = tnetns.netns_available()
    if why is None:
        # Never a running harness's namespaces, even with --all: deleting them would kill its
        # measurement, and a live harness removes them itself when it stops (signals included).
        removed = tnetns.cleanup_leftovers(include_live=False, pid=args.pid)
        print(f"network namespaces: removed {len(removed)}{': ' + ', '.join(removed) if removed else ''}")
    else:
        print(f"network namespaces: not checked ({why})")
    n = 0
    for d in Path(tempfile.gettempdir()).glob(f"{WORKDIR_PREFIX}*"):
        pid = d.name[len(WORKDIR_PREFIX):].split("-", 1)[0]
        if d.is_dir() and pid.isdigit() and procs.cleanup_selects(int(pid), include_live=args.all,
                                                                  only_pid=args.pid):
            shutil.rmtree(d, ignore_errors=True)
            n += 1
    print(f"scratch directories: removed {n}")
    return EXIT_OK
