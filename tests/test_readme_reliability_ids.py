"""Every test README's Reliability table names exists: a promise is held by a test that is really there."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _reliability_rows() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("### 8. Reliability", 1)[1]
    return [ln for ln in section.splitlines() if ln.startswith("| **")]


def _cited(row: str) -> list[tuple[str, str]]:
    """(test file name, test function) pairs of a row's last column; `::name` and `[param]` continue the
    file named before them."""
    held_by = row.rstrip(" |").rsplit(" | ", 1)[1]
    out, current = [], None
    for token in re.findall(r"`([^`]+)`", held_by):
        file, _, name = token.partition("::")
        if file.endswith(".py"):
            current = Path(file).name
        elif file.startswith("[") and current:  # a parameter id of the file's test_fault
            continue
        if name and current:
            out.append((current, re.sub(r"\[.*$", "", name)))
    return out


def test_every_test_the_reliability_table_names_exists():
    files = {p.name: p for p in (ROOT / "tests").rglob("test_*.py")}
    rows = _reliability_rows()
    assert len(rows) >= 15
    missing = []
    for row in rows:
        cited = _cited(row)
        assert cited or "test_fault_table.py" in row, row[:80]
        for file, name in cited:
            path = files.get(file)
            if path is None or not re.search(
                rf"^def {re.escape(name)}\(", path.read_text(encoding="utf-8"), re.M
            ):
                missing.append(f"{file}::{name}")
    assert not missing, missing


def test_every_fault_row_the_table_names_exists():
    from tests.medseg.run import test_fault_table

    rows = "\n".join(_reliability_rows())
    named = set(re.findall(r"`(?:test_fault_table\.py::test_fault)?\[([a-z0-9_]+)\]`", rows))
    assert named and not named - set(test_fault_table.ROWS), sorted(named - set(test_fault_table.ROWS))
