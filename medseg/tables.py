"""CSV tables written whole and atomically (the union of the rows' keys is the header)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from medseg.runtime import atomic_write_text


def _fmt(v):
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def write_csv(path: str | Path, rows: list[dict]) -> None:
    """Write ``rows`` to ``path`` (temp file + rename); NaN becomes an empty cell."""
    cols: list[str] = []
    for r in rows:
        for k in r:
            if k not in cols:
                cols.append(k)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: _fmt(r.get(k, "")) for k in cols})
    atomic_write_text(path, buf.getvalue())


def read_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
