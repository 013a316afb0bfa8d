"""The kind registry: each kind declared once, with a driver that exists; analysis without matplotlib at import."""

from __future__ import annotations

import subprocess
import sys

import pytest

from harness.define.load import ConfigError, parse_config
from harness.kinds import KINDS, kind_of
from harness.kinds import unknown as unknown_kind
from harness.measure.drivers import DRIVERS, driver_for


def test_every_kind_is_registered_under_its_name_with_a_driver_that_exists() -> None:
    assert list(KINDS) == ["headline", "ab", "capped", "sweep", "peers", "latency", "connrate", "udp"]
    for name, kind in KINDS.items():
        assert kind.name == name and kind.driver in DRIVERS, name
        assert type(driver_for(name)) is DRIVERS[kind.driver]
    assert kind_of("from-a-newer-harness") is unknown_kind.KIND and driver_for("from-a-newer-harness").name == "iperf3"


def test_the_probe_kinds_are_the_ones_measured_by_the_probe() -> None:
    assert {n for n, k in KINDS.items() if k.uses_probe} == {"latency", "connrate"}
    assert {n for n, k in KINDS.items() if k.driver != "iperf3"} == {"latency", "connrate"}


@pytest.mark.parametrize(("doc", "key", "message"), [
    ({"kind": "sweep"}, "offered_mbps", "a sweep experiment needs at least one offered rate"),
    ({"kind": "capped", "paths": ["direct"]}, "caps_bytes_per_s", "a capped experiment needs at least one cap"),
    ({"kind": "ab"}, "paths", "an ab experiment needs two paths (or a pair)"),
    ({"kind": "udp", "offered_mbps": [100]}, "kind", "a udp experiment needs protocol: udp"),
    ({"kind": "latency", "offered_mbps": [100]}, "offered_mbps", "not used by a latency experiment"),
    ({"kind": "headline", "probe": {"warmup": 1}}, "probe", "only for the kinds latency, connrate"),
])
def test_a_kind_s_own_rules_run_when_its_config_loads(doc: dict, key: str, message: str) -> None:
    base = {"name": "t", "paths": ["direct"], "rounds": 1, "seconds": 1, "omit_seconds": 0}
    with pytest.raises(ConfigError) as e:
        parse_config({**base, **doc}, "x.yaml")
    assert any(p.startswith(f"x.yaml: {key}: {message}") for p in e.value.problems), e.value.problems


def test_probe_settings_only_for_probe_kinds() -> None:
    base = {"name": "t", "paths": ["direct"], "rounds": 1, "seconds": 1, "omit_seconds": 0}
    assert parse_config({**base, "kind": "latency"}).probe is not None
    assert parse_config({**base, "kind": "headline"}).probe is None


def test_measuring_and_validating_do_not_load_matplotlib() -> None:
    code = ("import sys; import harness.cli, harness.define.load, harness.measure.runner, harness.kinds; "
            "print('matplotlib' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
