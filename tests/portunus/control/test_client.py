"""Client pieces that need no server: reconnect backoff, certificate fetch refusals."""

from __future__ import annotations

import random

import pytest

from portunus.control.client import EnrollError, backoff_delay_s, enroll
from tests.support.net import free_port


def test_backoff_full_jitter_bounds() -> None:
    rng = random.Random(1)
    for attempt, ceiling in ((0, 0.5), (1, 1.0), (3, 4.0), (6, 30.0), (60, 30.0)):
        delays = [backoff_delay_s(attempt, 0.5, 30.0, rng) for _ in range(500)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > 0.8 * ceiling  # spread over the whole window: jitter, not a constant
        assert min(delays) < 0.2 * ceiling


def test_enroll_without_a_server_says_so() -> None:
    uri = f"portunus://127.0.0.1:{free_port()}/enroll?v=1&secret=x&fp=sha256:{'ab' * 32}"
    with pytest.raises(EnrollError, match="cannot reach the server"):
        enroll(uri, timeout_s=2)
    with pytest.raises(EnrollError, match="not an enrollment URI"):
        enroll("http://example.com/")
