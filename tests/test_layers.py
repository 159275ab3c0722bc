"""The layers only point down (issue 16): data -> training/evaluation core -> model families -> orchestration,
entry points and tools. Every import is read from the source (module level and inside functions), so a lazy
import cannot hide an upward edge; a module loaded by file path is caught by the text check."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# a model family = one or more packages; a family never imports another family (shared code moves down)
FAMILY_GROUPS = {
    "sam2": ("sam2_train", "func_2d", "func_3d"),
    "sam": ("sam_family",),
    "cnn": ("traditional_models",),
}
FAMILIES = tuple(p for group in FAMILY_GROUPS.values() for p in group)
ABOVE_ALL = ("tools", "bench", "train_2d", "train_3d", "inference_3d", "tests")

# package -> top-level names (or dotted prefixes) it must never import
FORBIDDEN = {
    "medseg/data": ("medseg.train", "medseg.eval", "medseg.run", *FAMILIES, *ABOVE_ALL),
    "medseg/train": ("medseg.run", *FAMILIES, *ABOVE_ALL),
    "medseg/eval": ("medseg.run", *FAMILIES, *ABOVE_ALL),
    "medseg/run": (*FAMILIES, *ABOVE_ALL),
    "medseg/family.py": ("medseg.run", *FAMILIES, *ABOVE_ALL),
    **{
        pkg: ("medseg.run", *ABOVE_ALL, *(p for other, g in FAMILY_GROUPS.items() if other != fam for p in g))
        for fam, group in FAMILY_GROUPS.items()
        for pkg in group
    },
}
MAX_LINES = 400


def _module_of(path: Path) -> str:
    rel = path.resolve().relative_to(ROOT).with_suffix("")
    parts = list(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
    return ".".join(parts)


def _docstrings(tree: ast.AST) -> set[int]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                out.add(id(first.value))
    return out


def _names_module(text: str) -> bool:
    """A dotted string naming a module of this repository (``func_3d.task``, ``x.y.Class``), not a config
    key such as ``func_3d.threshold``."""
    parts = text.split(".")
    for k in range(len(parts), 1, -1):
        base = ROOT.joinpath(*parts[:k])
        if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
            return True
    return False


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module ``path`` imports: ``import``/``from`` at any depth, relative imports resolved against
    the file's package, and dotted module paths in strings (``importlib.import_module("x.y")``,
    ``_target_: "x.y.Z"``, ``__import__``), docstrings excepted."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docs = _docstrings(tree)
    try:
        package = _module_of(path).split(".")
        if path.name != "__init__.py":
            package = package[:-1]
    except ValueError:  # a file outside the repository (the checker's own tests)
        package = []
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.append((node.lineno, node.module))
        elif isinstance(node, ast.ImportFrom):  # from . import x / from ..pkg import y
            base = package[: len(package) - (node.level - 1)] if node.level - 1 <= len(package) else []
            name = ".".join([*base, *([node.module] if node.module else [])])
            out += (
                [(node.lineno, name)]
                if node.module
                else [(node.lineno, f"{name}.{a.name}") for a in node.names]
            )
        elif isinstance(
            node, ast.Call
        ):  # importlib.import_module("x.y") / __import__("x") / f(_target_="x.Y")
            fn = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            args = node.args[:1] if fn in ("import_module", "__import__") else []
            args += [k.value for k in node.keywords if k.arg == "_target_"]
            out += [
                (node.lineno, a.value)
                for a in args
                if isinstance(a, ast.Constant) and isinstance(a.value, str)
            ]
        elif isinstance(node, ast.Dict):  # {"_target_": "x.y.Z"}
            out += [
                (node.lineno, v.value)
                for k, v in zip(node.keys, node.values)
                if isinstance(k, ast.Constant) and k.value == "_target_" and isinstance(v, ast.Constant)
            ]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            text = node.value.strip()  # "pkg.module.Class": a class named by its module path
            if re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\.[A-Z]\w*", text) and _names_module(text):
                out.append((getattr(node, "lineno", 0), text))
    return out


def _hits(name: str, banned: tuple[str, ...]) -> bool:
    return any(name == b or name.startswith(b + ".") for b in banned)


# known edges still to move down (issue 22, D): the frozen SAM encoder + CNN decoder model combines the
# SAM family's encoder with the CNN family's decoder and base class
KNOWN = {("sam_family/frozen_encoder.py", "traditional_models")}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_points_up(package):
    bad = []
    where = ROOT / package
    for path in sorted(where.rglob("*.py") if where.is_dir() else [where]):
        for line, name in imports_of(path):
            rel = str(path.relative_to(ROOT))
            if _hits(name, FORBIDDEN[package]) and not any(rel == f and _hits(name, (n,)) for f, n in KNOWN):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
        text = path.read_text(encoding="utf-8")
        if "spec_from_file_location" in text:
            bad.append(f"{path.relative_to(ROOT)} loads a module by file path")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_lazy_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from func_3d.task import X\n")
    assert _hits(imports_of(f)[0][1], FORBIDDEN["medseg/eval"])


def test_the_checker_sees_relative_imports_and_module_strings(tmp_path):
    """``from ..func_2d import x`` inside sam_family, ``importlib.import_module("func_3d.task")`` and a
    ``_target_`` string are imports too; a docstring naming a module is not."""
    f = ROOT / "sam_family" / "_layers_probe.py"
    f.write_text(
        '"""Mentions func_2d.task in a docstring."""\n'
        "from ..func_2d import task\n"
        "import importlib\n"
        'm = importlib.import_module("func_3d.task")\n'
        'node = {"_target_": "traditional_models.unet.UNet"}\n'
    )
    try:
        names = [n for _, n in imports_of(f)]
    finally:
        f.unlink()
    bad = [n for n in names if _hits(n, FORBIDDEN["sam_family"])]
    assert set(bad) == {"func_2d", "func_3d.task", "traditional_models.unet.UNet"}, names


def test_no_family_imports_another_family():
    assert set(FORBIDDEN["sam_family"]) >= {"sam2_train", "func_2d", "func_3d", "traditional_models"}
    assert "func_2d" not in FORBIDDEN["func_3d"] and "sam2_train" not in FORBIDDEN["func_2d"]


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
