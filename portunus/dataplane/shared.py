"""Limits shared by worker processes: one slot of shared memory per rule and per owner.

With `workers = N`, each worker process runs its own event loop and sees
only the connections the kernel gives its listener (SO_REUSEPORT), but a
rule's limits are the rule's, not the worker's: a cap of 1 MiB/s is
1 MiB/s in total, a concurrency limit of 100 is 100 in total. So every
LimitSet's state (three GCRA buckets, the admitted-connection count, the
live UDP flow count: limits.LIMIT_SET_CELLS floats) lives in one slot of a
shared array, and two process-shared locks serialise changes: one for
admission (concurrency + connection rate, taken once per connection or
flow) and one for bandwidth buckets (taken per chunk on capped rules only).
Uncapped, unlimited traffic never takes either lock on its bytes.

The supervisor (WorkerGroup) owns the array, assigns slots by name
("rule:NAME" / "owner:NAME") and initialises a slot before any worker uses
it; a name keeps its slot while it exists, so counters and bucket state
survive reloads like they do with one worker.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

from portunus.limits import LIMIT_SET_CELLS, new_cells

# Limit sets (rules + owners) one supervisor can track: 32,768 x 12 floats = 3 MiB.
MAX_SLOTS = 32768


class SharedLimits:
    """The shared array and its locks (picklable to spawned workers)."""

    def __init__(self, ctx: Any, slots: int = MAX_SLOTS) -> None:
        self.cells = ctx.RawArray("d", slots * LIMIT_SET_CELLS)
        self.admit_lock = ctx.Lock()
        self.bucket_lock = ctx.Lock()
        self.slots = slots

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


class SlotTable:
    """Supervisor side: name -> slot, reused after a name disappears."""

    def __init__(self, shared: SharedLimits) -> None:
        self._shared = shared
        self._by_name: dict[str, int] = {}
        self._free: list[int] = []
        self._next = 0

    def assign(self, names: set[str]) -> dict[str, int]:
        """Slots for exactly `names` (new names get a fresh, zeroed slot); frees the rest."""
        for name in [n for n in self._by_name if n not in names]:
            self._free.append(self._by_name.pop(name))
        for name in sorted(names):
            if name in self._by_name:
                continue
            if self._free:
                slot = self._free.pop()
            elif self._next < self._shared.slots:
                slot = self._next
                self._next += 1
            else:
                raise ValueError(f"more than {self._shared.slots} rules and owners: too many for "
                                 "shared limits across workers")
            base = slot * LIMIT_SET_CELLS
            self._shared.cells[base:base + LIMIT_SET_CELLS] = new_cells()
            self._by_name[name] = slot
        return dict(self._by_name)


def slot_name(kind: str, name: str) -> str:
    return f"{kind}:{name}"


def spawn_context() -> Any:
    """Workers start as fresh interpreters (spawn): safe next to gRPC's threads in the client."""
    return multiprocessing.get_context("spawn")
