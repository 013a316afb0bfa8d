"""Bounded numeric field types, and a display of any value that is safe to put in a message.

Every schema (rule TOML, the operator API's JSON, pushed rule sets,
server.toml) checks its numbers through a `Bounded`, so a number means and
is limited to the same thing wherever it comes from, every error says what
the field allows, and no value that passes can overflow the float arithmetic
downstream (token buckets, timers, select() timeouts).
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass
from typing import Any

# Shown values are cut to this many characters: enough to recognise a typo,
# never a 1 MiB echo of someone's request body.
MAX_SHOWN_CHARS = 60
# repr() of an int this large is itself refused by Python (4,300-digit limit),
# and nobody needs to read its digits: say how big it is instead.
_BIG_INT_BITS = 200

_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxstring = MAX_SHOWN_CHARS
_repr.maxother = MAX_SHOWN_CHARS
_repr.maxlong = MAX_SHOWN_CHARS


def show(v: Any) -> str:
    """A short repr of `v` for an error message; never raises, never recurses deeply."""
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > _BIG_INT_BITS:
        return f"an integer of about {int(v.bit_length() * math.log10(2)) + 1} digits"
    try:
        text = _repr.repr(v)
    except Exception:  # a value whose repr fails still deserves a message
        return f"a {type(v).__name__}"
    return text if len(text) <= MAX_SHOWN_CHARS else text[: MAX_SHOWN_CHARS - 3] + "..."


def is_int(v: Any) -> bool:
    """True for an int that is not a bool (JSON and TOML booleans are not numbers)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    """True for a finite int or float (not a bool, not NaN or infinity)."""
    if is_int(v):
        return True
    return isinstance(v, float) and math.isfinite(v)


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


@dataclass(frozen=True)
class Bounded:
    """The type of a numeric field: an integer (or any finite number) in [lo, hi] (lo excluded if lo_open)."""

    integer: bool
    lo: float
    hi: float
    unit: str = ""
    lo_open: bool = False

    def describe(self) -> str:
        """What the field allows, e.g. 'an integer from 1 to 1000 (connections)'."""
        kind = "an integer" if self.integer else "a number"
        span = f"> {_fmt(self.lo)} and <= {_fmt(self.hi)}" if self.lo_open else \
            f"from {_fmt(self.lo)} to {_fmt(self.hi)}"
        return f"{kind} {span}" + (f" ({self.unit})" if self.unit else "")

    def has_type(self, v: Any) -> bool:
        return is_int(v) if self.integer else is_number(v)

    def contains(self, v: Any) -> bool:
        """True if `v` has the right type and lies within the bounds."""
        if not self.has_type(v):
            return False
        return (v > self.lo if self.lo_open else v >= self.lo) and v <= self.hi

    def problem(self, v: Any) -> str | None:
        """None if `v` is allowed, else 'must be <describe()>, got <v>'."""
        return None if self.contains(v) else f"must be {self.describe()}, got {show(v)}"

    def coerce(self, v: Any) -> int | float:
        """`v` (already checked with `contains`) as the field's Python type."""
        return int(v) if self.integer else float(v)
