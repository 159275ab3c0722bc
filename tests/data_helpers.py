"""Hand-built data trees with real-world quirks, shared by the data-layer tests (no fixtures here)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def quirky_affine() -> np.ndarray:
    """Non-RAS: diag(-0.8, -0.8, 2.5) rotated 0.3 rad about z, with an offset."""
    c, s = np.cos(0.3), np.sin(0.3)
    aff = np.eye(4)
    aff[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([-0.8, -0.8, 2.5])
    aff[:3, 3] = [50.0, -20.0, 100.0]
    return aff


def save_nifti(path: Path, data_xyz: np.ndarray, affine: np.ndarray, dtype=np.int16, slope=None, inter=None):
    """Save raw stored values ``data_xyz`` (nibabel (i,j,k) order) with optional scl_slope/inter."""
    img = nib.Nifti1Image(data_xyz.astype(dtype), affine)
    img.set_data_dtype(dtype)
    img.header.set_qform(affine, 1)
    img.header.set_sform(affine, 1)
    if slope is not None:
        img.header.set_slope_inter(slope, inter)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(img, str(path))
    return path


def quirky_nnunet(root: Path, n_cases: int = 2, shape_xyz=(20, 16, 6)) -> tuple[Path, dict]:
    """nnU-Net v2 tree: int16 images with scl_slope=2/inter=-1024, 4D singleton axis, non-RAS affine,
    int16 labels. Returns (root, {case: (expected_hu_dhw, expected_label_dhw)})."""
    rng = np.random.default_rng(1)
    aff = quirky_affine()
    expected = {}
    for i in range(n_cases):
        cid = f"quirk_{i}"
        stored = rng.integers(0, 600, size=shape_xyz).astype(np.int16)
        lab = np.zeros(shape_xyz, np.int16)
        lab[3:9, 2:12, 1:4] = 1
        lab[12:17, 5:9, 2:5] = 3
        save_nifti(root / "imagesTr" / f"{cid}_0000.nii.gz", stored[..., None], aff, slope=2.0, inter=-1024.0)
        save_nifti(root / "labelsTr" / f"{cid}.nii.gz", lab, aff, dtype=np.int16)
        expected[cid] = ((stored.astype(np.float32) * 2 - 1024).transpose(2, 1, 0), lab.transpose(2, 1, 0))
    meta = {
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, "liver": 1, "kidney": 2, "spleen": 3},
        "numTraining": n_cases,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    return root, expected


def refuge_case(
    root: Path,
    name: str = "g0001",
    split: str = "Training-400",
    size: int = 32,
    raters: tuple[int, ...] = tuple(range(1, 8)),
) -> Path:
    """REFUGE case: disc votes 7/7 in a square, cup region A voted by raters 1-4 (majority), region B by
    raters 5-7 only (minority, must vanish). JPEG noise included."""
    d = root / split / name
    d.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), 90, np.uint8)).save(d / f"{name}_cropped.jpg")
    for r in raters:
        cup = np.zeros((size, size), np.uint8)
        if r <= 4:
            cup[8:14, 8:14] = 255
        else:
            cup[20:26, 20:26] = 255
        disc = np.zeros((size, size), np.uint8)
        disc[4:28, 4:28] = 255
        Image.fromarray(cup).save(d / f"{name}_seg_cup_{r}_cropped.jpg", quality=70)
        Image.fromarray(disc).save(d / f"{name}_seg_disc_{r}_cropped.jpg", quality=70)
    return d
