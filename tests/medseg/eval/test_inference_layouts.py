"""inference_3d.py on every layout (issue 12): one ``.npy`` convention, (D, H, W) in slice order
(defect 4: BTCV case folders were taken for DICOM series and the ``.npy`` copied the NIfTI's (W, H, D));
HD95 with its unit, mm where the input has a spacing and voxels where it has none (defect 5).

The model is replaced by "return the reference labels", so the test checks reader -> prediction ->
writers and the metric rows, independently of the model."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medseg.data import synthetic
from medseg.eval.tables import read_csv
from tests.conftest import compose_cfg
from tests.medseg.helpers import crop_nifti_width, record_loaded_cases

D, H, W = 6, 40, 34  # all different, so a swapped axis cannot go unnoticed


def nnunet_nifti(root: Path) -> dict[str, np.ndarray]:
    synthetic.write_nnunet(root, n_cases=2, depth=D, size=H, n_organs=2, n_test=0)
    crop_nifti_width(root, W)  # H -> W columns
    return {
        f.name[:-7]: np.asarray(nib.load(str(f)).dataobj).transpose(2, 1, 0)
        for f in (root / "labelsTr").iterdir()
    }


def nnunet_mha(root: Path) -> dict[str, np.ndarray]:
    import SimpleITK as sitk

    nnunet_nifti(root)
    for f in sorted(root.rglob("*.nii.gz")):
        sitk.WriteImage(sitk.ReadImage(str(f)), str(f.with_name(f.name[:-7] + ".mha")))
        f.unlink()
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    (root / "dataset.json").write_text(json.dumps(meta | {"file_ending": ".mha"}), encoding="utf-8")
    return {
        f.name[:-4]: sitk.GetArrayFromImage(sitk.ReadImage(str(f))) for f in (root / "labelsTr").glob("*.mha")
    }


def btcv(root: Path) -> dict[str, np.ndarray]:
    synthetic.write_btcv(root, n_cases=2, depth=D, size=H, n_test=0)
    out = {}
    for case in sorted((root / "Training" / "mask").iterdir()):
        for k in range(D):
            jpg = root / "Training" / "image" / case.name / f"{k}.jpg"
            Image.fromarray(np.asarray(Image.open(jpg))[:, :W]).save(jpg, quality=95)
            np.save(case / f"{k}.npy", np.load(case / f"{k}.npy")[:, :W])
        out[case.name] = np.stack([np.load(case / f"{k}.npy") for k in range(D)])
    return out


def npz(root: Path, spacing: bool = True) -> dict[str, np.ndarray]:
    synthetic.write_npz(root, n_cases=2, depth=D, size=H)
    out = {}
    for f in sorted(root.glob("*.npz")):
        z = dict(np.load(f))
        z = {"imgs": z["imgs"][..., :W], "gts": z["gts"][..., :W]} | (
            {"spacing": z["spacing"]} if spacing else {}
        )
        np.savez_compressed(f, **z)
        out[f.stem] = z["gts"]
    return out


# layout: (writer, dataset config, HD95 unit of the rows, a NIfTI written beside the .npy)
LAYOUTS = {
    "nnunet_nifti": (nnunet_nifti, "nnunet", "mm", True),
    "nnunet_mha": (nnunet_mha, "nnunet", "mm", True),
    "btcv": (btcv, "btcv", "voxel", False),
    "npz": (npz, "npz", "mm", False),
    "npz_without_spacing": (lambda r: npz(r, spacing=False), "npz", "voxel", False),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_npy_is_dhw_in_slice_order_and_hd95_has_its_unit(layout, meta_ckpt, tmp_path, monkeypatch):
    import func_3d.inference as inf
    from sam2_train.family import SAM2Family

    writer, dataset, unit, nifti = LAYOUTS[layout]
    expected = writer(tmp_path / "data")
    seen = record_loaded_cases(monkeypatch, inf)

    def reference_as_prediction(model, images, vp, prompt_type, out_hw, **kw):
        assert images.shape[0] == D and tuple(out_hw) == (H, W)
        return np.asarray(seen["last"]["label"]).astype(np.int64).copy()

    monkeypatch.setattr(SAM2Family, "predict_volume", lambda _f, *a, **kw: reference_as_prediction(*a, **kw))
    out = tmp_path / "preds"
    cfg = compose_cfg(
        "inference_3d",
        [
            f"checkpoint={meta_ckpt}",
            f"dataset={dataset}",
            f"dataset.root={tmp_path / 'data'}",
            "split=all",
            f"output_dir={out}",
            "trainer.device=cpu",
            "model=sam2.1_hiera_t",
            "model.image_size=64",
        ],
        tmp_path / "hydra",
    )
    rows = inf.run_inference(cfg)
    assert sorted(seen) == sorted([*expected, "last"])
    for cid, ref in expected.items():
        assert ref.shape == (D, H, W)
        npy = np.load(out / f"{cid}.npy")
        assert npy.shape == (D, H, W) and np.array_equal(npy, ref), (layout, cid, npy.shape)
        assert (out / f"{cid}.nii.gz").exists() == nifti
        if nifti:  # the overlay image holds the same labels in nibabel's (i, j, k) order
            assert np.array_equal(
                np.asarray(nib.load(str(out / f"{cid}.nii.gz")).dataobj), ref.transpose(2, 1, 0)
            )
    assert rows and {r["hd95_unit"] for r in rows} == {unit}
    assert {r["hd95_unit"] for r in read_csv(out / "metrics.csv")} == {unit}
    assert all(float(r["dice"]) == 1.0 and float(r["hd95"]) == 0.0 for r in rows if r["status"] == "ok")
