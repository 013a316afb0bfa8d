"""The live terminal view of `portunus-standalone stats`: one row per rule, redrawn each interval.

Rates are the change of the byte counters between two snapshots divided by
the time between them (the first frame shows the instance's own ~5 s
rates). q, Q, Ctrl-C or SIGTERM quit and restore the terminal.
"""

from __future__ import annotations

import curses
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# How often a pressed key is noticed between two refreshes.
KEY_POLL_MS = 100
COLUMNS = ("RULE", "PROTO", "LISTEN", "IN/s", "OUT/s", "CONNS", "FLOWS", "TOTAL", "ERRORS")
_WIDTHS = (16, 5, 21, 10, 10, 5, 5, 8, 6)
# On a narrow terminal these columns go first, in this order (the rest fit 80 columns).
_DROP_ORDER = ("TOTAL", "PROTO")

@dataclass(frozen=True)
class RuleRow:
    """One rule's line: rates in bytes per second, live connections (TCP) or flows (UDP)."""

    name: str
    protocol: str
    listen: str
    in_bytes_per_s: float
    out_bytes_per_s: float
    connections: int | None
    flows: int | None
    total: int
    errors: int


def errors_of(c: dict[str, Any]) -> int:
    """Connections no target took, plus admissions refused and datagrams dropped (any reason)."""
    return int(c.get("connect_failures", 0)) + sum(c.get("rejected", {}).values()) + \
        sum(c.get("dropped", {}).values())


def rule_rows(prev: dict[str, Any] | None, cur: dict[str, Any], elapsed_s: float) -> list[RuleRow]:
    """Rows for the snapshot `cur`, with rates against `prev` taken `elapsed_s` earlier."""
    rows = []
    before = (prev or {}).get("rules", {})
    for name, c in sorted(cur.get("rules", {}).items()):
        old = before.get(name)
        if old is not None and elapsed_s > 0:
            # A counter going down means the rule was re-created: count from zero.
            rate_in = max(0, c["bytes_in"] - old["bytes_in"]) / elapsed_s
            rate_out = max(0, c["bytes_out"] - old["bytes_out"]) / elapsed_s
        else:
            rate_in = float(c.get("rate_in_bytes_per_s", 0.0))
            rate_out = float(c.get("rate_out_bytes_per_s", 0.0))
        udp = c.get("protocol") == "udp"
        live = int(c.get("connections_active", 0))
        rows.append(RuleRow(name, str(c.get("protocol", "?")), str(c.get("listen", "")), rate_in, rate_out,
                            None if udp else live, live if udp else None, int(c.get("connections_total", 0)),
                            errors_of(c)))
    return rows


def human_rate(bytes_per_s: float) -> str:
    """'0 B/s', '12.3 KB/s', '1.21 GB/s' (decimal units, like link speeds)."""
    for unit, scale in (("GB/s", 1e9), ("MB/s", 1e6), ("KB/s", 1e3)):
        if bytes_per_s >= scale:
            value = bytes_per_s / scale
            return f"{value:.2f} {unit}" if value < 10 else f"{value:.1f} {unit}"
    return f"{bytes_per_s:.0f} B/s"


def _cell(value: int | None) -> str:
    return "-" if value is None else str(value)


def columns_for(width: int) -> tuple[int, ...]:
    """Indexes of the columns to show in `width` characters (dropping TOTAL, then PROTO)."""
    shown = list(range(len(COLUMNS)))
    for name in _DROP_ORDER:
        if _span(shown) <= width - 1:
            break
        shown.remove(COLUMNS.index(name))
    return tuple(shown)


def _span(shown: list[int]) -> int:
    return sum(_WIDTHS[i] for i in shown) + len(shown) - 1


def format_row(row: RuleRow, shown: tuple[int, ...] | None = None) -> str:
    cells = (row.name, row.protocol, row.listen, human_rate(row.in_bytes_per_s), human_rate(row.out_bytes_per_s),
             _cell(row.connections), _cell(row.flows), str(row.total), str(row.errors))
    return _join(cells, shown)


def header(shown: tuple[int, ...] | None = None) -> str:
    return _join(COLUMNS, shown)


def _join(cells: tuple[str, ...], shown: tuple[int, ...] | None) -> str:
    parts = []
    for i in shown if shown is not None else range(len(cells)):
        text, width = cells[i], _WIDTHS[i]
        text = text if len(text) <= width else text[:width - 1] + "~"
        parts.append(text.ljust(width) if i < 3 else text.rjust(width))
    return " ".join(parts)


class _Quit(Exception):
    """SIGTERM: leave the loop so curses restores the terminal."""


def run_live(fetch: Callable[[], dict[str, Any]], addr: str, interval_s: float) -> int:
    """Draw until q / Ctrl-C / SIGTERM; `fetch` raises OSError or ValueError when the instance is away."""
    def on_term(signum: int, frame: Any) -> None:
        raise _Quit

    old = signal.signal(signal.SIGTERM, on_term)
    try:
        curses.wrapper(lambda scr: _loop(scr, fetch, addr, interval_s))
    except (KeyboardInterrupt, _Quit):
        pass
    finally:
        signal.signal(signal.SIGTERM, old)
    return 0


def _loop(scr: Any, fetch: Callable[[], dict[str, Any]], addr: str, interval_s: float) -> None:
    try:
        curses.curs_set(0)
    except curses.error:
        pass  # a terminal without cursor control: the view works anyway
    scr.timeout(KEY_POLL_MS)
    prev: dict[str, Any] | None = None
    prev_t = 0.0
    while True:
        now = time.monotonic()
        try:
            snap: dict[str, Any] | None = fetch()
            problem = None
        except (OSError, ValueError) as e:
            snap, problem = None, f"cannot read {addr}: {getattr(e, 'reason', e)}; retrying"
        lines = [f"portunus-standalone stats  {addr}  {time.strftime('%H:%M:%S')}   (q quits)", ""]
        if snap is not None:
            rows = rule_rows(prev, snap, now - prev_t if prev is not None else 0.0)
            shown = columns_for(scr.getmaxyx()[1])
            lines += [header(shown), *(format_row(r, shown) for r in rows)]
            if not rows:
                lines.append("(no rules)")
            prev, prev_t = snap, now
        else:
            lines.append(problem or "")
        _draw(scr, lines)
        deadline = now + interval_s
        while time.monotonic() < deadline:
            key = scr.getch()
            if key in (ord("q"), ord("Q")):
                return
            if key == curses.KEY_RESIZE:
                break


def _draw(scr: Any, lines: list[str]) -> None:
    scr.erase()
    height, width = scr.getmaxyx()
    for y, text in enumerate(lines[:height]):
        try:
            scr.addnstr(y, 0, text, max(0, width - 1), curses.A_BOLD if y in (0, 2) else curses.A_NORMAL)
        except curses.error:
            pass  # the last cell of a tiny window: nothing to do
    scr.refresh()
