"""Fixtures: a control plane (server data dir + processes), stopped and removed at teardown."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from portunus.control.store import Store, open_store
from tests.portunus.control.support import ControlPlane, new_plane, remove_plane


@pytest.fixture
def plane() -> Iterator[ControlPlane]:
    """A running portunus-server on a fresh data dir (no clients yet)."""
    p = new_plane()
    try:
        p.start_server()
        yield p
    finally:
        remove_plane(p)


@pytest.fixture(scope="module")
def edge() -> Iterator[ControlPlane]:
    """A running server with one enrolled, connected client named "edge" (shared by a module)."""
    p = new_plane()
    try:
        p.start_server()
        p.edge_client = p.start_client(p.enroll("edge"))  # type: ignore[attr-defined]
        p.wait_online("edge")
        yield p
    finally:
        remove_plane(p)


@pytest.fixture
def store() -> Iterator[Store]:
    """A fresh state.db (the real SQLite store) in a temp dir, closed and removed afterwards."""
    d = Path(tempfile.mkdtemp(prefix="portunus-store-", dir="/tmp"))
    s = open_store(d)
    try:
        yield s
    finally:
        s.close()
        shutil.rmtree(d, ignore_errors=True)
