"""notebooks/quickstart.ipynb is committed executed (a reader on GitHub or Colab sees its pictures), and
re-executing it headless (nbclient, its own tiny settings) gives the same cells without errors: the same
sources, output types and mime types, and the same text for deterministic cells once paths and memory
addresses are normalised (``tools/execute_notebook.py``; ``make notebook`` rewrites the file)."""

from __future__ import annotations

import nbformat

from tests.conftest import ROOT
from tools.execute_notebook import NOTEBOOK, comparable, execute


def _pictures(nb) -> int:
    return sum("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))


def test_committed_notebook_has_its_outputs_and_stays_small():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.get("outputs") for c in code), "a code cell without outputs: run `make notebook`"
    assert not [o for c in code for o in c.outputs if o.output_type == "error"]
    assert _pictures(nb) >= 3  # overlays, 3D picture, comparison grid
    assert NOTEBOOK.stat().st_size < 1_000_000
    text = NOTEBOOK.read_text(encoding="utf-8")
    assert str(ROOT) not in text and "/tmp/" not in text  # no machine's folders in the committed file


def test_reexecuting_the_notebook_gives_the_committed_cells(tmp_path):
    committed = nbformat.read(NOTEBOOK, as_version=4)
    fresh = execute(NOTEBOOK, tmp_path)  # raises CellExecutionError naming the cell that failed
    assert not [o for c in fresh.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert (tmp_path / "runs" / "2d_sam2.1_hiera_t" / "csv" / "scalars.csv").is_file()
    assert list((tmp_path / "predictions").glob("*.nii.gz"))
    assert "hiera_t" in (tmp_path / "comparison" / "comparison.md").read_text(encoding="utf-8")
    old, new = comparable(committed), comparable(fresh)
    assert len(old) == len(new)
    for i, (a, b) in enumerate(zip(old, new, strict=True)):
        assert a == b, f"cell {i} differs from the committed notebook (run `make notebook`):\n{a}\n!=\n{b}"
