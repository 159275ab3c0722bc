"""verify_dataset: the real command on a clean tree and on a tree with broken cases; fast mode."""

from __future__ import annotations

import subprocess

import nibabel as nib
import numpy as np

from medseg.data import synthetic as S
from medseg.data.datasets import KvasirDataset, NnUNetDataset
from medseg.data.verify import verify_dataset
from tests.conftest import ROOT, run_cli


def _run(*overrides: str) -> subprocess.CompletedProcess:
    return run_cli("tools/verify_dataset.py", *overrides, timeout=120)


def _break(root):
    """case_001: truncated image; case_002: label with an undeclared id (9)."""
    img = root / "imagesTr" / "case_001_0000.nii.gz"
    img.write_bytes(img.read_bytes()[:400])
    lab = root / "labelsTr" / "case_002.nii.gz"
    seg = nib.load(str(lab))
    data = np.asarray(seg.dataobj).copy()
    data[0, 0, 0] = 9
    nib.save(nib.Nifti1Image(data, seg.affine, seg.header), str(lab))
    return img, lab


def test_cli_clean_and_broken(tmp_path):
    root = S.write_nnunet(tmp_path / "Dataset001_Synth", n_cases=3, depth=6, size=24, n_organs=2)
    ok = _run("dataset=nnunet", f"dataset.root={root}")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "OK: 4 cases" in ok.stdout
    img, lab = _break(root)
    bad = _run("dataset=nnunet", f"dataset.root={root}")
    assert bad.returncode != 0
    assert str(img) in bad.stdout and str(lab) in bad.stdout
    assert not (ROOT / "outputs" / "verify").exists() or not any((ROOT / "outputs" / "verify").iterdir())


def test_cli_bad_root(tmp_path):
    res = _run("dataset=kvasir", f"dataset.root={tmp_path}")
    assert res.returncode != 0 and f"{tmp_path / 'images'}: folder missing" in res.stderr


def test_fast_mode_finds_shape_mismatch(tmp_path):
    root = S.write_nnunet(tmp_path / "d", n_cases=2, depth=6, size=24, n_test=0)
    assert verify_dataset(NnUNetDataset(root), fast=True) == []
    lab = root / "labelsTr" / "case_001.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((24, 24, 5), np.uint8), nib.load(str(lab)).affine), str(lab))
    problems = verify_dataset(NnUNetDataset(root), fast=True)
    assert len(problems) == 1 and problems[0].startswith(f"{lab}: label shape")


def test_every_problem_reported_2d(tmp_path):
    root = S.write_kvasir(tmp_path, n=4, size=16)
    (root / "masks" / "cju0000synth.jpg").unlink()
    (root / "masks" / "cju0003synth.jpg").write_bytes(b"\xff\xd8 broken")
    empty = np.zeros((16, 16), np.uint8)
    from PIL import Image

    Image.fromarray(empty).save(root / "masks" / "cju0001synth.jpg")
    problems = verify_dataset(KvasirDataset(root, strict=False))
    text = "\n".join(problems)
    assert len(problems) == 3
    for name in ("images/cju0000synth.jpg", "masks/cju0001synth.jpg", "masks/cju0003synth.jpg"):
        assert name in text
