"""inference_3d.py: masks on the input's own grid (shape, affine, voxel order), metrics and pictures,
prompts files for unlabelled volumes, checkpoint handling and output safety."""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.errors import DataError
from medseg.eval.tables import read_csv as _rows
from tests.conftest import compose_cfg, run_cli, run_entry
from tests.medseg.helpers import crop_nifti_width, record_loaded_cases

# depth 8, H 40, W 34 (non-square, so a swapped H/W cannot go unnoticed); cases 0-2 labelled, case_003 not
D, H, W = 8, 40, 34
TEST_CASE = "case_003"


def _oblique_affine() -> np.ndarray:
    """Not RAS and not axis-aligned: rotations about z and x, flipped x and z, spacing 0.8/0.8/2.5 mm."""
    cz, sz, cx, sx = np.cos(0.3), np.sin(0.3), np.cos(0.15), np.sin(0.15)
    rot = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]]) @ np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([-0.8, 0.8, -2.5])
    aff[:3, 3] = [-40.0, 112.5, 61.0]
    return aff


def _nii(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine


@pytest.fixture(scope="module")
def volumes(tmp_path_factory) -> Path:
    """nnU-Net v2 tree with an oblique, flipped, anisotropic affine and non-square slices."""
    from medseg.data import synthetic

    root = synthetic.write_nnunet(
        tmp_path_factory.mktemp("oblique"),
        n_cases=3,
        depth=D,
        size=H,
        n_organs=2,
        n_test=1,
        affine=_oblique_affine(),
    )
    crop_nifti_width(root, W)  # 40 -> 34 columns
    return root


@pytest.fixture(scope="module")
def trained(volumes, tmp_path_factory) -> Path:
    """checkpoint_best.pth (+ splits.json beside it) of a one-step 3D training run on ``volumes``."""
    out = tmp_path_factory.mktemp("train3d")
    run_entry(
        "train_3d",
        [
            f"dataset.root={volumes}",
            "func_3d.video_length=3",
            "trainer.batch_size=1",
            "trainer.limit_train_batches=1",
            "trainer.limit_val_batches=1",
            "logger=none",
        ],
        out,
    )
    return out / "checkpoint_best.pth"


def _infer(ckpt: Path, root: Path, out: Path, *extra: str, split: str = "val"):
    from func_3d.inference import run_inference

    cfg = compose_cfg(
        "inference_3d",
        [
            f"checkpoint={ckpt}",
            f"dataset.root={root}",
            f"split={split}",
            f"output_dir={out}",
            "trainer.device=cpu",
            *extra,
        ],
        out.parent / "hydra",
    )
    return run_inference(cfg)


def _val_ids(ckpt: Path) -> list[str]:
    return json.loads((ckpt.parent / "splits.json").read_text(encoding="utf-8"))["val"]


def test_cli_writes_masks_on_input_grid_metrics_and_pictures(volumes, trained, tmp_path):
    preds = tmp_path / "preds"
    r = run_cli(
        "inference_3d.py",
        f"checkpoint={trained}",
        "dataset=nnunet",
        f"dataset.root={volumes}",
        "split=val",
        f"output_dir={preds}",
        "save_vis=true",
        "trainer.device=cpu",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        timeout=400,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    ids = _val_ids(trained)
    for cid in ids:
        data, aff = _nii(preds / f"{cid}.nii.gz")
        ref, ref_aff = _nii(volumes / "imagesTr" / f"{cid}_0000.nii.gz")
        assert data.shape == ref.shape == (W, H, D)
        np.testing.assert_allclose(aff, ref_aff, atol=1e-5)
        np.testing.assert_allclose(aff, _oblique_affine(), atol=1e-5)
        assert np.issubdtype(data.dtype, np.integer)
        npy = np.load(preds / f"{cid}.npy")  # (D, H, W): the NIfTI's (i, j, k) data transposed
        assert npy.shape == (D, H, W) and np.array_equal(npy, data.transpose(2, 1, 0))
        assert set(np.unique(data)) <= {0, 1, 2}
    rows = _rows(preds / "metrics.csv")
    assert sorted((r["case_id"], r["class_name"]) for r in rows) == sorted(
        (c, o) for c in ids for o in ("organ1", "organ2")
    )
    assert all(r["status"] != "ok" or 0 <= float(r["dice"]) <= 1 for r in rows)
    pngs = list((preds / "vis").glob("*.png"))
    assert pngs and all(p.name.split("_z")[0] in ids for p in pngs)


def test_labels_land_on_the_right_voxels(volumes, trained, tmp_path, monkeypatch):
    """With the model replaced by "return the ground truth", the written NIfTI is the label file, voxel for
    voxel: checks reader -> prompts -> (D,H,W) prediction -> writer, independently of the model's quality."""
    import func_3d.inference as inf
    from sam2_train.family import SAM2Family

    seen = record_loaded_cases(monkeypatch, inf)

    def fake_segment(model, images, vp, prompt_type, out_hw, **kw):
        label = np.asarray(seen["last"]["label"])
        assert images.shape[0] == label.shape[0] == D and tuple(out_hw) == label.shape[1:] == (H, W)
        S = images.shape[-1]
        assert vp.obj_ids
        for o, k in enumerate(vp.obj_ids):  # each box prompt frames its organ on its slice
            for z, p in vp.per_object[o].items():
                ys, xs = np.nonzero(label[z] == k)
                box = np.asarray(p["box"]) * np.array([W / S, H / S, W / S, H / S])
                ref = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                assert np.abs(box - ref).max() <= 2.5, (k, z, box, ref)
        seen["calls"] = seen.get("calls", 0) + 1
        return label.astype(np.int64).copy()

    monkeypatch.setattr(SAM2Family, "predict_volume", lambda _f, *a, **kw: fake_segment(*a, **kw))
    preds = tmp_path / "preds"
    rows = _infer(trained, volumes, preds)
    ids = _val_ids(trained)
    assert seen["calls"] == len(ids)
    for cid in ids:
        data, aff = _nii(preds / f"{cid}.nii.gz")
        ref, ref_aff = _nii(volumes / "labelsTr" / f"{cid}.nii.gz")
        assert data.shape == ref.shape and np.array_equal(data, ref)
        np.testing.assert_allclose(aff, ref_aff, atol=1e-5)
        assert np.array_equal(np.load(preds / f"{cid}.npy"), ref.transpose(2, 1, 0))
    assert rows and all(
        float(r["dice"]) == 1.0 and float(r["hd95"]) == 0.0 for r in rows if r["status"] == "ok"
    )


def _write_prompts(path: Path, prompts: dict) -> Path:
    path.write_text(json.dumps(prompts), encoding="utf-8")
    return path


def test_prompts_file_on_unlabelled_volume(volumes, trained, tmp_path):
    pf = _write_prompts(
        tmp_path / "prompts.json",
        {
            TEST_CASE: {
                "organ1": [{"slice": 4, "box": [4, 6, 20, 24]}],
                "2": [{"slice": 3, "points": [[10, 12], [30, 35]], "labels": [1, 0]}],
            }
        },
    )
    preds = tmp_path / "preds"
    rows = _infer(trained, volumes, preds, f"prompts_file={pf}", split="test")
    assert rows == [] and not (preds / "metrics.csv").exists()
    data, aff = _nii(preds / f"{TEST_CASE}.nii.gz")
    ref, ref_aff = _nii(volumes / "imagesTs" / f"{TEST_CASE}_0000.nii.gz")
    assert data.shape == ref.shape == (W, H, D)
    np.testing.assert_allclose(aff, ref_aff, atol=1e-5)
    assert np.array_equal(np.load(preds / f"{TEST_CASE}.npy"), data.transpose(2, 1, 0))  # (D, H, W)
    assert set(np.unique(data)) <= {0, 1, 2}


@pytest.mark.parametrize(
    "organs, problem",
    [
        ({"organ1": [{"slice": 4, "box": [4, 6, W + 10, 24]}]}, "outside the image"),
        ({"spleen": [{"slice": 4, "box": [4, 6, 20, 24]}]}, "unknown organ 'spleen'"),
        ({"7": [{"slice": 4, "box": [4, 6, 20, 24]}]}, "unknown organ id 7"),
        ({"organ1": [{"slice": D, "box": [4, 6, 20, 24]}]}, "slice out of range"),
        ({"organ2": [{"slice": 2, "points": [[W, 3]]}]}, "outside the image"),
    ],
)
def test_bad_prompts_are_one_clear_error(organs, problem, volumes, trained, tmp_path):
    pf = _write_prompts(tmp_path / "bad_prompts.json", {TEST_CASE: organs})
    preds = tmp_path / "preds"
    with pytest.raises(DataError) as e:
        _infer(trained, volumes, preds, f"prompts_file={pf}", split="test")
    msg = str(e.value)
    assert str(pf) in msg and problem in msg and "\n" not in msg, msg
    assert not list(preds.glob("*.npy")) and not list(preds.glob("*.nii.gz"))


def test_missing_label_without_prompts_file_is_clear(volumes, trained, tmp_path):
    with pytest.raises(DataError, match=f"{TEST_CASE}.*no label.*prompts_file="):
        _infer(trained, volumes, tmp_path / "preds", split="test")


def test_meta_checkpoint_needs_model(volumes, meta_ckpt, tmp_path):
    out = tmp_path / "preds"
    r = run_cli(
        "inference_3d.py",
        f"checkpoint={meta_ckpt}",
        f"dataset.root={volumes}",
        "split=val",
        f"output_dir={out}",
        "trainer.device=cpu",
        f"hydra.run.dir={tmp_path / 'h'}",
        timeout=300,
    )
    assert r.returncode != 0
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 1, r.stderr
    assert str(meta_ckpt) in err[0] and "model=" in err[0] and "sam2.1_hiera_t" in err[0], err[0]
    assert not out.exists()
    # with the variant it runs
    preds = tmp_path / "ok"
    rows = _infer(meta_ckpt, volumes, preds, "model=sam2.1_hiera_t", "model.image_size=64")
    assert rows and list(preds.glob("*.nii.gz"))


def test_our_checkpoint_with_conflicting_model_is_one_error(volumes, trained, tmp_path):
    from medseg.train.checkpoint import CheckpointError

    preds = tmp_path / "preds"
    with pytest.raises(CheckpointError) as e:
        _infer(trained, volumes, preds, "model=sam2.1_hiera_s", "model.image_size=64")
    msg = str(e.value)
    assert str(trained) in msg and "sam2.1_hiera_t" in msg and "sam2.1_hiera_s" in msg and "model=" in msg, (
        msg
    )
    assert not preds.exists()


def test_existing_outputs_are_refused_without_overwrite(volumes, trained, tmp_path):
    preds = tmp_path / "preds"
    _infer(trained, volumes, preds, "save_vis=true")
    files = sorted(p for p in preds.rglob("*") if p.is_file())
    assert any(p.suffix == ".npy" for p in files) and any(p.suffix == ".png" for p in files)
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}
    with pytest.raises(FileExistsError, match="overwrite=true"):
        _infer(trained, volumes, preds, "save_vis=true")
    assert sorted(p for p in preds.rglob("*") if p.is_file()) == files
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files} == before
    _infer(trained, volumes, preds, "overwrite=true")  # allowed when asked


def test_unwritable_output_dir_is_clear(volumes, trained, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder", encoding="utf-8")
    with pytest.raises(PermissionError, match="output_dir is not writable"):
        _infer(trained, volumes, blocker / "preds")
    assert blocker.read_text(encoding="utf-8") == "not a folder"
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "readonly"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(PermissionError, match="output_dir is not writable"):
                _infer(trained, volumes, ro / "preds")
        finally:
            ro.chmod(0o700)


def test_exact_parity_mode_tracks_one_by_one_and_agrees(volumes, trained, tmp_path, monkeypatch):
    """func_3d.exact_parity=true goes through propagate_one_by_one (bit-identical to Meta's predictor,
    tests/func_3d/test_parity_3d.py) and gives the batched masks up to rounding."""
    import func_3d.volume as volume_mod

    calls = []
    orig = volume_mod.propagate_one_by_one
    monkeypatch.setattr(
        volume_mod, "propagate_one_by_one", lambda *a, **k: calls.append(a[3]) or orig(*a, **k)
    )
    _infer(trained, volumes, tmp_path / "batched")
    assert not calls
    _infer(trained, volumes, tmp_path / "exact", "func_3d.exact_parity=true")
    assert calls and all(n >= 1 for n in calls)
    for cid in _val_ids(trained):
        a, b = np.load(tmp_path / "batched" / f"{cid}.npy"), np.load(tmp_path / "exact" / f"{cid}.npy")
        assert a.shape == b.shape and (a == b).mean() >= 0.999
