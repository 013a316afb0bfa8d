"""`portunus-bench paths`: every forwarding path, and whether (or why not) it can run here."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from harness.errors import EXIT_OK

NAME = "paths"


def add_parser(sub: Any) -> None:
    """The verb's subparser: arguments, help and description."""
    pth = sub.add_parser("paths", help="list the forwarding paths and whether each can run here",
                         description="List every registered path with its description and availability.")
    pth.add_argument("--json", action="store_true", help="machine-readable output")
    pth.add_argument("--topology", choices=("loopback", "netns", "hosts"), default="loopback",
                     help="availability on this topology kind (default loopback)")


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """List the paths and their availability (text or JSON)."""
    from harness.paths import PATHS

    rows = []
    for name, cls in PATHS.items():
        path = cls()
        av = path.available_on(args.topology)
        if av.ok:
            av = path.available()
        rows.append({"path": name, "description": cls.description, "available": av.ok, "reason": av.reason,
                     "capped": cls.capped, "forwarder_process": cls.has_forwarder_process})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            state = "available" if r["available"] else f"UNAVAILABLE: {r['reason']}"
            print(f"{r['path']:<18} {r['description']}\n{'':<18} {state}")
    return EXIT_OK
