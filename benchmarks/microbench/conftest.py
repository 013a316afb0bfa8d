"""Fixtures of the microbenchmark module: settings, running processes, the result recorder.

Environment knobs and why the processes share one CPU: benchmarks/microbench/session.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from benchmarks.microbench.session import (
    FORWARDERS,
    BenchSettings,
    Dataplane,
    Recorder,
    loadavg,
    pinned_to,
    settings_from_env,
    start_dataplane,
    write_results,
)


# Module scope, not session: a plain `pytest` runs the benchmarks as smoke
# tests among the others, and the CPU pinning must end with this module.
@pytest.fixture(scope="module")
def bench_settings() -> BenchSettings:
    return settings_from_env()


@pytest.fixture(scope="module")
def dataplane(tmp_path_factory: pytest.TempPathFactory, bench_settings: BenchSettings) -> Iterator[Dataplane]:
    """The echo end, a default forwarder ("splice": the caller's environment decides, so
    PORTUNUS_DISABLE_SPLICE=1 turns it into a copy forwarder) and a forced copy forwarder,
    all pinned with this process to one CPU."""
    tmp = tmp_path_factory.mktemp("microbench")
    program = FORWARDERS[bench_settings.forwarder]
    with pinned_to(bench_settings.cpu):
        yield from start_dataplane(tmp, program)


@pytest.fixture(scope="module")
def recorder(bench_settings: BenchSettings, dataplane: Dataplane) -> Iterator[Recorder]:
    """Collects every benchmark's result; a full run writes the file when the module ends."""
    rec = Recorder(bench_settings)
    load_start = loadavg()
    yield rec
    if bench_settings.out is not None:
        write_results(rec, dataplane, load_start)
