"""The layers only point down (issue 16): data -> training/evaluation core -> model families -> orchestration,
entry points and tools. Every import is read from the source (module level and inside functions), so a lazy
import cannot hide an upward edge; a module loaded by file path is caught by the text check."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = ("sam2_train", "func_2d", "func_3d", "sam_family", "traditional_models")
ABOVE_ALL = ("tools", "bench", "train_2d", "train_3d", "inference_3d", "tests")

# package -> top-level names (or dotted prefixes) it must never import
FORBIDDEN = {
    "medseg/data": ("medseg.train", "medseg.eval", "medseg.run", *FAMILIES, *ABOVE_ALL),
    "medseg/train": ("medseg.run", *FAMILIES, *ABOVE_ALL),
    "medseg/eval": ("medseg.run", *FAMILIES, *ABOVE_ALL),
    "medseg/run": (*FAMILIES, *ABOVE_ALL),
    **{fam: ("medseg.run", *ABOVE_ALL) for fam in FAMILIES},
}
MAX_LINES = 400


def imports_of(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
    return out


def _hits(name: str, banned: tuple[str, ...]) -> bool:
    return any(name == b or name.startswith(b + ".") for b in banned)


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_points_up(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, name in imports_of(path):
            if _hits(name, FORBIDDEN[package]):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
        text = path.read_text(encoding="utf-8")
        if "spec_from_file_location" in text:
            bad.append(f"{path.relative_to(ROOT)} loads a module by file path")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_lazy_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from func_3d.task import X\n")
    assert _hits(imports_of(f)[0][1], FORBIDDEN["medseg/eval"])


def test_no_module_over_400_lines():
    dirs = ("medseg", *FAMILIES, "tools", "bench", "tests")
    big = []
    for d in dirs:
        for path in (ROOT / d).rglob("*.py"):
            n = len(path.read_text(encoding="utf-8").splitlines())
            if n > MAX_LINES:
                big.append(f"{path.relative_to(ROOT)}: {n} lines")
    for path in ROOT.glob("*.py"):
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > 100:  # entry scripts stay thin
            big.append(f"{path.name}: {n} lines (entry scripts < 100)")
    assert not big, "\n".join(sorted(big))
