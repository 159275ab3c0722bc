"""CSV tables written whole and atomically (the union of the rows' keys is the header), or appended to
(a run resumed in its own folder)."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from medseg.train.runtime import atomic_write_text


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
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def append_csv(path: str | Path, rows: list[dict]) -> None:
    """Append ``rows`` to ``path`` (written whole, as by :func:`write_csv`, when the file is new or a row
    brings a column the header lacks; earlier rows keep their values either way)."""
    path = Path(path)
    if not rows:
        return
    if not path.exists():
        write_csv(path, rows)
        return
    with open(path, encoding="utf-8", newline="") as f:
        header = next(csv.reader(f), [])
    if not header or any(k not in header for r in rows for k in r):
        write_csv(path, read_csv(path) + list(rows))
        return
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, extrasaction="ignore")
    for r in rows:
        w.writerow({k: _fmt(r.get(k, "")) for k in header})
    with open(path, "a", encoding="utf-8", newline="") as f:
        f.write(buf.getvalue())


def keep_rows(path: str | Path, keep) -> int:
    """Drop the rows of ``path`` for which ``keep(row)`` is false (rows written after the checkpoint a
    run resumes from); returns how many were dropped. A missing file is left missing."""
    path = Path(path)
    if not path.exists():
        return 0
    rows = read_csv(path)
    kept = [r for r in rows if keep(r)]
    if not kept:
        path.unlink()
    elif len(kept) != len(rows):
        write_csv(path, kept)
    return len(rows) - len(kept)
