"""The fault table's registry and helpers (``test_fault_table.py``): ``row`` registers a fault, ``refused``
asserts one ``error:`` line, exit 2 and folders unchanged."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from medseg.data import synthetic
from tests.conftest import SMALL, compose_cfg
from tests.fault_helpers import one_line_exit, snapshot

ROWS: dict[str, object] = {}


def row(fn):
    """Register a row of the table under its function name (without the leading ``f_``)."""
    ROWS[fn.__name__.removeprefix("f_")] = fn
    return fn


def refused(fn, capsys, *names, keep=()) -> str:
    """``fn`` gives one ``error:`` line naming every one of ``names``, exit 2, ``keep`` folders unchanged."""
    keep = [Path(k) for k in keep]
    before = [snapshot(k) if k.exists() else None for k in keep]
    line = one_line_exit(fn, capsys)
    assert line.startswith("error: "), line
    for n in names:
        assert str(n) in line, (n, line)
    assert [snapshot(k) if k.exists() else None for k in keep] == before
    return line


def callback(cfg):
    from medseg.run.rundir import RunFolderCallback

    return lambda: RunFolderCallback().on_run_start(config=cfg)


def preflight(cfg, run: Path, mode: str = "2d"):
    from medseg.run.context import prepare_data

    return lambda: prepare_data(cfg, run, mode=mode, preflight=True)


def _kvasir(t: Path) -> Path:
    return synthetic.write_kvasir(t / "kvasir", n=4, size=32)


def _nnunet(t: Path) -> Path:
    return synthetic.write_nnunet(t / "nn", n_cases=3, depth=6, size=32, n_organs=2)


def _nii_edit(f: Path, edit) -> None:
    nii = nib.load(str(f))
    data = np.asarray(nii.dataobj).copy()
    new = edit(data)
    img = nib.Nifti1Image(new, nii.affine, nii.header)
    img.set_data_dtype(new.dtype)  # NaN/inf stay NaN/inf (the header's int16 would cast them)
    nib.save(img, str(f))


def _train3d(t: Path, root: Path, *extra: str):
    return compose_cfg("train_3d", [*SMALL, "dataset=nnunet", f"dataset.root={root}", *extra], t / "run")


def _train2d(t: Path, root: Path, *extra: str):
    return compose_cfg("train_2d", [*SMALL, f"dataset.root={root}", *extra], t / "run")
