"""Shared fixtures: real processes started per test and stopped on every exit path."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.proc import Standalone


@pytest.fixture
def standalone(tmp_path: Path) -> Iterator:
    """Factory: standalone(toml, env=..., wait_ports=[...]) -> Standalone (stopped at teardown)."""
    started: list[Standalone] = []

    def start(toml: str, **kw) -> Standalone:
        s = Standalone(tmp_path, toml, name=f"rules{len(started)}.toml", **kw)
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()
