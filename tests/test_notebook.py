"""notebooks/quickstart.ipynb runs end to end headless (nbclient), on its own tiny settings."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT

NOTEBOOK = ROOT / "notebooks" / "quickstart.ipynb"


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (extra: dev)")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (extra: dev)")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed (extra: dev)")
    monkeypatch.setenv("QUICKSTART_DIR", str(tmp_path))  # the notebook writes everything there
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOK.parent)}}
    )
    client.execute()  # raises CellExecutionError naming the cell that failed
    errors = [
        o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"
    ]
    assert not errors
    assert (tmp_path / "runs" / "2d_sam2.1_hiera_t" / "csv" / "scalars.csv").is_file()
    assert list((tmp_path / "predictions").glob("*.nii.gz"))
    assert "hiera_t" in (tmp_path / "comparison" / "comparison.md").read_text()
    shown = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(shown) >= 3  # overlays, 3D picture, comparison grid
