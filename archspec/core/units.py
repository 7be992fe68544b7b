"""Numbers and shapes: how they are written everywhere archspec prints them (CLI, reports,
diagrams, diffs), so a table and a diagram never disagree, and `pair`, the one reading of
a kernel, stride or dilation written as one int or two."""

from __future__ import annotations


def human(n: float) -> str:
    """12_345_678 -> '12.35M'."""
    for unit, f in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= f:
            return f"{n / f:.2f}{unit}"
    return str(int(n))


def shape_str(s) -> str:
    """(56, 56, 256) -> '(56, 56, 256)', (1000,) -> '(1000,)'; a list of shapes joined by commas."""
    if s and isinstance(s[0], (list, tuple)):
        return ", ".join(shape_str(x) for x in s)
    return "(" + ", ".join(str(x) for x in s) + ("," if len(s) == 1 else "") + ")"


def pair(v) -> tuple[int, int]:
    """A kernel size, stride or dilation as written (one int, or two) as (height, width)."""
    if isinstance(v, (list, tuple)):
        return int(v[0]), int(v[1])
    return int(v), int(v)


def parse_count(text: str, most: int = 1 << 20) -> int:
    """A count written on the command line: an integer from 1 to `most` (``--top 0`` printed
    nothing and ``--top -1`` every class but one, both with exit 0).

    Raises:
        ValueError: anything else, the message repeating the text.
    """
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"expected an integer >= 1 (got {text!r})") from None
    if not 1 <= n <= most:
        raise ValueError(f"expected an integer from 1 to {most:,} (got {n})")
    return n
