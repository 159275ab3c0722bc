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


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_points_up(package):
    bad = []
    where = ROOT / package
    for path in sorted(where.rglob("*.py") if where.is_dir() else [where]):
        for line, name in imports_of(path):
            if _hits(name, FORBIDDEN[package]):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
        text = path.read_text(encoding="utf-8")
        if "spec_from_file_location" in text:
            bad.append(f"{path.relative_to(ROOT)} loads a module by file path")
    assert not bad, "\n".join(bad)


def test_the_checker_sees_lazy_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from func_3d.task import X\n", encoding="utf-8")
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
        'node = {"_target_": "traditional_models.unet.UNet"}\n',
        encoding="utf-8",
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


# ------------------------------------------------------------------------------ one import path per name
# (issue 22): a name is imported from the module that defines it; no module hands on what it imports
REEXPORT_SCOPE = ("medseg", *FAMILIES, "tools", "bench")


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:  # the checker's own tests write outside the repository
        return str(path)


def _module_level(tree: ast.Module):
    """Statements run at import time: the module body and the bodies of its top-level ``if``/``try``/``with``
    blocks (not functions or classes)."""
    todo = list(tree.body)
    while todo:
        node = todo.pop(0)
        yield node
        if isinstance(node, (ast.If, ast.Try, ast.With)) or type(node).__name__ == "TryStar":
            for field in ("body", "orelse", "finalbody"):
                todo += getattr(node, field, [])
            for handler in getattr(node, "handlers", []):
                todo += handler.body


def _names_used(tree: ast.Module) -> set[str]:
    """Every name the module's own code reads, string annotations (``x: "Tensor"``) included."""
    used = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            used.add(node.id)
        if isinstance(node, (ast.arg, ast.AnnAssign)):
            annotation = node.annotation
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            annotation = node.returns
        else:
            continue
        if isinstance(annotation, ast.Constant) and isinstance(annotation.value, str):
            try:
                expr = ast.parse(annotation.value, mode="eval")
            except SyntaxError:
                continue
            used |= {n.id for n in ast.walk(expr) if isinstance(n, ast.Name)}
    return used


def _dunder_all(tree: ast.Module) -> set[str]:
    out = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        if any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets) and node.value is not None:
            out |= {
                e.value
                for e in ast.walk(node.value)
                if isinstance(e, ast.Constant) and isinstance(e.value, str)
            }
    return out


def reexports_of(path: Path) -> list[str]:
    """What ``path`` hands on: names it imports with ``from X import a`` at module level but never uses
    itself (a second import path for ``a``), and ``from X import *``. A package ``__init__.py`` may hand
    on what its ``__all__`` lists from inside the package (its public API), nothing from elsewhere;
    ``import x`` for its side effects (``import sam2  # noqa: F401``) is not a re-export."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    used = _names_used(tree)
    is_init = path.name == "__init__.py"
    public = _dunder_all(tree) if is_init else set()
    try:
        package = _module_of(path)
    except ValueError:  # outside the repository (the checker's own tests)
        package = path.parent.name
    out = []
    for node in _module_level(tree):
        if not isinstance(node, ast.ImportFrom) or node.module == "__future__":
            continue
        inside = is_init and (node.level > 0 or _hits(node.module or "", (package,)))
        for alias in node.names:
            name = alias.asname or alias.name
            if name == "*":
                out.append(f"{_rel(path)}:{node.lineno} re-exports everything of {node.module}")
            elif name not in used and not (name in public and inside):
                out.append(f"{_rel(path)}:{node.lineno} re-exports {name}")
    return out


def test_no_module_reexports_a_name():
    """A module imports only what it uses: nothing is re-exported (no shims), so each name keeps one path."""
    bad = [r for d in REEXPORT_SCOPE for path in sorted((ROOT / d).rglob("*.py")) for r in reexports_of(path)]
    assert not bad, "\n".join(bad)


def test_the_reexport_check_sees_shims(tmp_path):
    """An unused ``from`` import and a star import are re-exports; a name used only in a (string or
    ``TYPE_CHECKING``) annotation, a side-effect ``import`` and an ``__init__``'s own ``__all__`` are not."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "shim.py").write_text(
        "from __future__ import annotations\n"
        "import os  # noqa: F401\n"
        "from pathlib import Path, PurePath  # noqa: F401\n"
        "from typing import TYPE_CHECKING\n"
        "from json import *  # noqa: F403\n"
        "if TYPE_CHECKING:\n"
        "    from torch import Tensor\n"
        "def f(x: Tensor, y: 'PurePath') -> None:\n"
        "    return None\n",
        encoding="utf-8",
    )
    (pkg / "__init__.py").write_text(
        "from pkg.shim import f\nfrom pathlib import Path\n__all__ = ['f', 'Path']\n", encoding="utf-8"
    )
    found = [r.split(" ", 1)[1] for r in reexports_of(pkg / "shim.py")]
    assert found == ["re-exports Path", "re-exports everything of json"], found
    found = [r.split(" ", 1)[1] for r in reexports_of(pkg / "__init__.py")]
    assert found == ["re-exports Path"], found


def _bound_by_import(path: Path) -> set[str]:
    """Names ``path`` binds at module level only by importing them (none of its own ``def``/``class``/
    assignments binds them); an ``__init__.py``'s ``__all__`` names count as its own."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    imported, own = set(), set()
    for node in _module_level(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imported |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            own.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For, ast.With)):
            own |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    if path.name == "__init__.py":
        own |= _dunder_all(tree)
    return imported - own


def _repo_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for f in (base.with_suffix(".py"), base / "__init__.py"):
        if f.is_file():
            return f
    return None


def test_every_name_is_imported_from_where_it_is_defined():
    """``from X import a`` (X a module of this repository) finds ``a`` defined in X, not imported into it,
    everywhere (entry scripts, tools, bench and tests too): moving a name breaks its importers loudly
    instead of needing a shim. Submodules (``from pkg import mod``) are fine."""
    dirs = dict.fromkeys((*REEXPORT_SCOPE, *ABOVE_ALL))  # in order, once each
    files = [p for d in dirs for p in sorted(ROOT.glob(f"{d}/**/*.py"))] + sorted(ROOT.glob("*.py"))
    cache: dict[Path, set[str]] = {}
    bad = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module):
                continue
            target = _repo_file(node.module)
            if target is None or target.resolve() == path.resolve():
                continue
            if target not in cache:
                cache[target] = _bound_by_import(target)
            for alias in node.names:
                if alias.name in cache[target] and _repo_file(f"{node.module}.{alias.name}") is None:
                    bad.append(f"{_rel(path)}:{node.lineno} imports {alias.name} from {node.module}")
    assert not bad, "\n".join(bad)
