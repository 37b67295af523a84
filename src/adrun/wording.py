"""Counted nouns in messages: "1 cell", "2 cells", never "1 cells" or "cell(s)"."""

from __future__ import annotations


def plural(count: int | float, noun: str, many: str | None = None) -> str:
    """``plural(1, "cell")`` is "1 cell", ``plural(3, "cell")`` "3 cells"; ``many`` for irregular nouns.

    Float counts (Ray's CPUs) print without a needless ".0".
    """
    shown = f"{count:g}" if isinstance(count, float) else str(count)
    return f"{shown} {noun if count == 1 else many or noun + 's'}"


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``: wall times as people read them."""
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
