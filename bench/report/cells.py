"""Cell formatting shared by the page's tables."""

from __future__ import annotations


def fmt(x, nd=3):
    """``—`` for a missing value, floats to ``nd`` decimals."""
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


def verdict(ok) -> str:
    """Pass / FAIL in bold, ``—`` when not judged."""
    return "—" if ok is None else ("**pass**" if ok else "**FAIL**")


def ok_rows(rows: list[dict] | None) -> list[dict]:
    """The measured rows of a section (rows that ran out of memory or failed left out)."""
    return [x for x in rows or [] if "oom" not in x and "error" not in x]
