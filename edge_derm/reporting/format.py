"""How a figure is written, in every report: fractions as percentages, deltas as signed points, the en
dash for a value that is not there (``None``, NaN, a non-number)."""

from __future__ import annotations

from typing import Any

#: What a missing or undefined value prints as.
DASH = "–"


def num(v: Any) -> float | None:
    """``v`` as a finite float, or None (None, "", booleans, non-numbers, NaN and infinities)."""
    if isinstance(v, bool) or v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if f == f and f not in (float("inf"), float("-inf")) else None


def pct(v: Any, digits: int = 2, none: str = DASH) -> str:
    """A fraction as a percentage string (``0.4979`` -> ``49.79``); ``none`` when there is no number."""
    f = num(v)
    return none if f is None else f"{100 * f:.{digits}f}"


def pp(v: Any, digits: int = 2, none: str = DASH) -> str:
    """A fraction difference as signed percentage points (``-0.01`` -> ``-1.00``)."""
    f = num(v)
    return none if f is None else f"{100 * f:+.{digits}f}"


def fmt(v: Any, digits: int = 2, none: str = DASH) -> str:
    """A number with ``digits`` decimals."""
    f = num(v)
    return none if f is None else f"{f:.{digits}f}"


def auto(v: Any) -> str:
    """Two decimals, or three significant digits below 1 (tiny models run in microseconds)."""
    f = num(v)
    if f is None:
        return DASH
    return f"{f:.2f}" if abs(f) >= 1 or f == 0 else f"{f:.3g}"


def mb(nbytes: Any) -> str:
    """A byte count in megabytes (see :func:`auto`)."""
    f = num(nbytes)
    return DASH if f is None else auto(f / 1e6)


def ms(v: Any, none: str = "") -> str:
    """Milliseconds to 3 significant digits, from tiny test models to 3-second phones."""
    f = num(v)
    return none if f is None else f"{f:.3f}" if f < 1 else f"{f:.2f}" if f < 100 else f"{f:.0f}"


def interval(ci: Any) -> str:
    """A ``[lo, hi]`` fraction interval as ``[lo, hi]`` percentages, or an en dash."""
    if not ci or len(ci) != 2 or ci[0] is None or ci[1] is None:
        return DASH
    return f"[{pct(ci[0], 1)}, {pct(ci[1], 1)}]"


def verdict(passed: Any) -> str:
    """``pass`` / ``FAIL`` for a boolean check, an en dash when it was not made."""
    return DASH if not isinstance(passed, bool) else ("pass" if passed else "FAIL")


def cell(v: Any) -> str:
    """A table cell: ``str(v)``, an en dash for None."""
    return DASH if v is None else str(v)


def slug(name: str) -> str:
    """A file-name-safe form of ``name`` (image names of a section)."""
    out = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name).strip("_")
    return out or "root"
