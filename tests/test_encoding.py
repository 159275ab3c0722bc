"""Text files are read and written as UTF-8 whatever the machine's locale (a cluster node with LANG=C,
a Windows code page): tables, splits and reports with a patient name like ``Müller`` round-trip.

Before this, files were opened with the locale's encoding, so the suite only worked where Python
happened to use UTF-8 (the Makefile exported PYTHONUTF8=1 to hide it).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DIRS = [
    "medseg",
    "sam2_train",
    "sam_family",
    "traditional_models",
    "func_2d",
    "func_3d",
    "tools",
    "bench",
    "tests",
]
NOT_FILES = {
    "Image",
    "gzip",
    "tarfile",
    "zipfile",
    "h5py",
    "nib",
    "os",
    "io",
    "webbrowser",
    "sitk",
    "lzma",
    "bz2",
}


def _mode(call: ast.Call, position: int):
    for kw in call.keywords:
        if kw.arg == "mode":
            return kw.value.value if isinstance(kw.value, ast.Constant) else "?"
    if len(call.args) > position:
        arg = call.args[position]
        return arg.value if isinstance(arg, ast.Constant) else "?"
    return None


def _text(mode) -> bool:
    return mode is None or (isinstance(mode, str) and mode != "?" and "b" not in mode)


def text_io_without_encoding(path: Path) -> list[int]:
    """Lines of ``path`` that open, read or write text without ``encoding=``."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call) or any(k.arg == "encoding" for k in node.keywords):
            continue
        f, kws = node.func, {k.arg for k in node.keywords}
        if isinstance(f, ast.Name) and f.id == "open":
            hit = _text(_mode(node, 1))
        elif isinstance(f, ast.Attribute) and f.attr in ("read_text", "write_text"):
            hit = True
        elif isinstance(f, ast.Attribute) and f.attr == "fdopen":
            hit = _mode(node, 1) is not None and _text(_mode(node, 1))
        elif isinstance(f, ast.Attribute) and f.attr == "open":
            owner = f.value.id if isinstance(f.value, ast.Name) else None
            mode = _mode(node, 0)
            hit = owner not in NOT_FILES and (
                (mode is not None and _text(mode)) or "newline" in kws or not (node.args or node.keywords)
            )
        else:
            hit = False
        if hit:
            lines.append(node.lineno)
    return lines


def test_every_text_file_is_opened_as_utf8():
    files = [p for d in DIRS for p in (ROOT / d).rglob("*.py")] + sorted(ROOT.glob("*.py"))
    bad = [f"{p.relative_to(ROOT)}:{n}" for p in files for n in text_io_without_encoding(p)]
    assert not bad, "text I/O without encoding='utf-8':\n" + "\n".join(bad)


def test_the_scan_sees_a_locale_dependent_read(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text(
        "from pathlib import Path\nPath('a').read_text()\nopen('b', 'w')\nopen('c', 'rb')\n"
        "Path('d').open(newline='')\nPath('e').write_text('x', encoding='utf-8')\n",
        encoding="utf-8",
    )
    assert text_io_without_encoding(probe) == [2, 3, 5]


PROBE = """
import json, sys, tempfile
from pathlib import Path
from medseg.data.splits import _load_json, save_splits
from medseg.eval.tables import read_csv, write_csv
name = "Patient_M\\u00fcller"
d = Path(tempfile.mkdtemp())
write_csv(d / "m.csv", [{"case_id": name, "class": "Sehnerv", "dice": 0.5}])
assert read_csv(d / "m.csv")[0]["case_id"] == name
save_splits({"train": [name], "val": [], "test": []}, d / "splits.json")
assert _load_json(d / "splits.json")["train"] == [name]
print("ok")
"""


def test_tables_and_splits_round_trip_under_an_ascii_locale(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE, encoding="utf-8")
    env = {**os.environ, "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0", "LC_ALL": "C", "LANG": "C"}
    env["PYTHONPATH"] = str(ROOT)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
