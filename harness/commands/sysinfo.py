"""`portunus-bench sysinfo`: the host metadata every result file records, as JSON."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from typing import Any

from harness.errors import EXIT_OK

NAME = "sysinfo"


def add_parser(sub: Any) -> None:
    """The verb's subparser: arguments, help and description."""
    sub.add_parser("sysinfo", help="print the host metadata recorded in result files (JSON)",
                   description="Print commit, CPU, kernel, distro, tool versions and sysctls as JSON.")


def run(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """Print the host metadata as JSON."""
    from harness.measure.sysinfo import collect_sysinfo

    print(json.dumps(collect_sysinfo(), indent=2))
    return EXIT_OK
