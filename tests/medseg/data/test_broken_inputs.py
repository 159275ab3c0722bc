"""Broken inputs: each gives one clear DataError whose message names the offending file or config key."""

from __future__ import annotations

import gzip
import json

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medseg.data import synthetic as S
from medseg.data.datasets import (
    BTCVDataset,
    Folder2DDataset,
    KvasirDataset,
    NnUNetDataset,
    NpzDataset,
    RefugeDataset,
)
from medseg.data.io import read_image, read_label
from medseg.data.splits import resolve_splits
from medseg.data.transforms import build_transform
from medseg.data.verify import verify_dataset
from medseg.errors import DataError
from tests.data_helpers import quirky_affine, quirky_nnunet, refuge_case, save_nifti


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    return msg


@pytest.fixture
def nn(tmp_path):
    root, _ = quirky_nnunet(tmp_path / "nn", n_cases=2)
    return root


def test_truncated_nifti(nn):
    f = nn / "imagesTr" / "quirk_0_0000.nii.gz"
    f.write_bytes(f.read_bytes()[:200])
    with pytest.raises(DataError) as e:
        NnUNetDataset(nn).load_case("quirk_0")
    assert _one_line(e).startswith(str(f)) and "truncated" in str(e.value)


def test_shape_mismatch(nn):
    lab = nn / "labelsTr" / "quirk_1.nii.gz"
    save_nifti(lab, np.zeros((20, 16, 5)), quirky_affine())
    with pytest.raises(DataError, match=r"quirk_1\.nii\.gz: label shape \(5, 16, 20\) differs"):
        NnUNetDataset(nn).load_case("quirk_1")


def test_geometry_mismatch(nn):
    lab = nn / "labelsTr" / "quirk_1.nii.gz"
    aff = quirky_affine()
    aff[2, 2] = 3.0
    save_nifti(lab, np.zeros((20, 16, 6)), aff)
    with pytest.raises(DataError, match=r"quirk_1\.nii\.gz: geometry differs .*spacing"):
        NnUNetDataset(nn).load_case("quirk_1")


def test_unknown_label_id(nn):
    lab = nn / "labelsTr" / "quirk_0.nii.gz"
    data = np.zeros((20, 16, 6))
    data[2, 2, 2] = 7
    save_nifti(lab, data, quirky_affine())
    problems = verify_dataset(NnUNetDataset(nn))
    assert problems == [f"{lab}: label holds undeclared ids [7] (declared: [1, 2, 3])"]


def test_nan_in_image(nn):
    img = nn / "imagesTr" / "quirk_1_0000.nii.gz"
    data = np.ones((20, 16, 6), np.float32)
    data[0, 0, 0] = np.nan
    save_nifti(img, data, quirky_affine(), dtype=np.float32)
    problems = verify_dataset(NnUNetDataset(nn))
    assert problems == [f"{img}: image holds 1 NaN/inf values"]


def test_non_integer_label(nn):
    lab = nn / "labelsTr" / "quirk_0.nii.gz"
    save_nifti(lab, np.full((20, 16, 6), 0.5), quirky_affine(), dtype=np.float32)
    with pytest.raises(DataError, match=r"quirk_0\.nii\.gz: label holds non-integer values"):
        NnUNetDataset(nn).load_case("quirk_0")


def test_missing_label_file(nn):
    (nn / "labelsTr" / "quirk_1.nii.gz").unlink()
    with pytest.raises(DataError, match=r"labelsTr/quirk_1\.nii\.gz: label missing for image .*quirk_1_0000"):
        NnUNetDataset(nn)
    assert len(NnUNetDataset(nn, strict=False).problems) == 1


def test_missing_dataset_json(nn):
    (nn / "dataset.json").unlink()
    with pytest.raises(DataError, match=r"dataset\.json: dataset\.json missing"):
        NnUNetDataset(nn)


def test_missing_images_tr(tmp_path):
    (tmp_path / "dataset.json").write_text(
        json.dumps({"labels": {"background": 0, "a": 1}}), encoding="utf-8"
    )
    with pytest.raises(DataError, match=r"imagesTr: folder missing"):
        NnUNetDataset(tmp_path)


def test_wrong_layout(tmp_path):
    S.write_kvasir(tmp_path, n=2, size=16)
    with pytest.raises(DataError, match=rf"{tmp_path}: no Training/ or Test/ folder \(dataset=btcv\)"):
        BTCVDataset(tmp_path)


def test_missing_mask_for_image(tmp_path):
    S.write_kvasir(tmp_path, n=3, size=16)
    (tmp_path / "masks" / "cju0001synth.jpg").unlink()
    with pytest.raises(DataError, match=r"images/cju0001synth\.jpg: no mask for this image"):
        KvasirDataset(tmp_path)


def test_empty_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match=rf"{tmp_path / 'images'}: no image files"):
        Folder2DDataset(tmp_path)


def test_corrupt_jpeg(tmp_path):
    S.write_kvasir(tmp_path, n=2, size=32)
    f = tmp_path / "images" / "cju0000synth.jpg"
    f.write_bytes(f.read_bytes()[:300])
    with pytest.raises(DataError) as e:
        KvasirDataset(tmp_path).load_case("cju0000synth")
    assert _one_line(e).startswith(str(f))


def test_not_an_image(tmp_path):
    (tmp_path / "x.png").write_text("hello", encoding="utf-8")
    with pytest.raises(DataError, match=r"x\.png: not a readable image"):
        read_image(tmp_path / "x.png")
    (tmp_path / "x.vtk").write_text("hello", encoding="utf-8")
    with pytest.raises(DataError, match=r"x\.vtk: unsupported file type"):
        read_label(tmp_path / "x.vtk")


def test_refuge_without_raters(tmp_path):
    d = refuge_case(tmp_path, "g0001", raters=(1,))
    for f in d.glob("*_seg_*"):
        f.unlink()
    with pytest.raises(DataError, match=r"g0001_seg_cup_1_cropped\.jpg: no rater masks"):
        RefugeDataset(tmp_path)


def test_btcv_missing_mask_slice(tmp_path):
    S.write_btcv(tmp_path, n_cases=1, depth=4, size=16, n_test=0)
    (tmp_path / "Training/mask/img0001/2.npy").unlink()
    with pytest.raises(DataError, match=r"mask/img0001/2\.npy: mask slice missing"):
        BTCVDataset(tmp_path).load_case("img0001")


def test_npz_missing_key(tmp_path):
    np.savez(tmp_path / "a.npz", image=np.zeros((2, 4, 4)))
    with pytest.raises(DataError, match=r"a\.npz: key 'imgs' missing"):
        NpzDataset(tmp_path).load_case("a")


def test_bad_split_file(tmp_path, nn):
    bad = tmp_path / "splits.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(DataError, match=rf"{bad}: split file is not valid JSON"):
        resolve_splits(NnUNetDataset(nn), None, bad)
    with pytest.raises(DataError, match=r"nope\.json: split file not found"):
        resolve_splits(NnUNetDataset(nn), {"file": str(tmp_path / "nope.json")}, None)


def test_unknown_split_id(tmp_path, nn):
    f = tmp_path / "run" / "splits.json"
    f.parent.mkdir()
    f.write_text(json.dumps({"train": ["quirk_0", "ghost"], "val": [], "test": []}), encoding="utf-8")
    with pytest.raises(DataError, match=rf"{f}: unknown case ids \['ghost'\]"):
        resolve_splits(NnUNetDataset(nn), None, f)
    with pytest.raises(DataError, match=r"split.train/val/test: case id 'quirk_0' is in both"):
        resolve_splits(NnUNetDataset(nn), {"train": ["quirk_0"], "test": ["quirk_0"]}, None)


def test_bad_ratios(nn):
    with pytest.raises(DataError, match=r"split.ratios: ratios must sum to 1"):
        resolve_splits(NnUNetDataset(nn), {"ratios": [0.8, 0.1, 0.2], "use_native": False}, None)
    with pytest.raises(DataError, match=r"split.ratios: ratios must be non-negative"):
        resolve_splits(NnUNetDataset(nn), {"ratios": [1.2, -0.2, 0.0]}, None)


def test_bad_window_name():
    with pytest.raises(DataError, match=r"dataset.intensity.window: 'abdominal' is not one of"):
        build_transform({"modality": "ct", "window": "abdominal"}, 64)


def test_bad_label_config(nn):
    with pytest.raises(DataError, match=r"dataset.labels: ids \[9\] are not labels of"):
        NnUNetDataset(nn, labels=[1, 9])
    with pytest.raises(DataError, match=r"dataset.root: not set"):
        NnUNetDataset("???")
    with pytest.raises(DataError, match=r"dataset.target: 'rim'"):
        RefugeDataset(nn, target="rim")


def test_4d_multichannel_nifti_needs_channel(tmp_path):
    f = tmp_path / "mc.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 3, 2), np.float32), np.eye(4)), str(f))
    with pytest.raises(DataError, match=r"mc\.nii\.gz: 4D image with 2 channels"):
        read_image(f)
    assert read_image(f, channel=1)[0].shape == (3, 4, 4)


def test_gzip_garbage_label(nn):
    lab = nn / "labelsTr" / "quirk_0.nii.gz"
    lab.write_bytes(gzip.compress(b"garbage" * 10))
    with pytest.raises(DataError, match=r"quirk_0\.nii\.gz: not a readable NIfTI"):
        NnUNetDataset(nn).load_case("quirk_0")


def test_mismatched_2d_mask(tmp_path):
    S.write_folder2d(tmp_path, n=2, size=16)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "masks" / "sample_001.png")
    with pytest.raises(DataError, match=r"masks/sample_001\.png: mask shape \(1, 8, 8\) differs"):
        Folder2DDataset(tmp_path).load_case("sample_001")
