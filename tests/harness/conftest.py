"""Fixtures for harness tests: real iperf3, real iptables, real forwarder processes."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.paths import iptables as ipt
from harness.site import procs

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
IPERF_FIXTURES = FIXTURES / "iperf3"


def iperf_fixture(name: str) -> str:
    """Verbatim iperf3 3.12 output saved from this machine."""
    return (IPERF_FIXTURES / name).read_text()


def nat_rules() -> str:
    return subprocess.run(["iptables-save", "-t", "nat"], capture_output=True, text=True, check=True).stdout


@pytest.fixture(autouse=True)
def _no_leftovers() -> Iterator[None]:
    """Every harness test leaves no child process and no iptables chain of this process behind."""
    yield
    leftovers = procs.live_children()
    procs.stop_all()
    chain = ipt.chain_name()
    leaked_chain = os.geteuid() == 0 and chain in nat_rules()
    if leaked_chain:
        ipt.remove_chain(chain)
    assert not leftovers, f"test left child processes running: {[p.args for p in leftovers]}"
    assert not leaked_chain, f"test left iptables chain {chain} behind"
