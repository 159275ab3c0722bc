"""Fault-table rows about data and weights files (registered into ``fault_table_base.ROWS``)."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from medseg.data import synthetic
from tests.fault_helpers import evil_pickle, finished_run, inference_cfg, snapshot
from tests.medseg.run.fault_table_base import (
    _kvasir,
    _nii_edit,
    _nnunet,
    _train2d,
    _train3d,
    preflight,
    refused,
    row,
)


# ====================================================================================== data
@row
def f_refuge_case_missing_one_rater(t, capsys, **_):
    root = synthetic.write_refuge(t / "refuge", n=3, size=32)
    case = sorted(p for p in (root / "Training-400").iterdir() if p.is_dir())[0]
    gone = case / f"{case.name}_seg_cup_4_cropped.jpg"
    gone.unlink()
    cfg = _train2d(t, root, "dataset=refuge")
    line = refused(preflight(cfg, t / "run"), capsys, gone, "dataset.n_raters", keep=[root, t / "run"])
    assert f"'{case.name}'" in line


@row
def f_one_pixel_image(t, capsys, **_):
    root = _kvasir(t)
    img = sorted((root / "images").glob("*.jpg"))[-1]
    Image.fromarray(np.full((1, 1, 3), 200, np.uint8)).save(img)
    Image.fromarray(np.full((1, 1), 255, np.uint8)).save(root / "masks" / img.name)
    cfg = _train2d(t, root)
    refused(preflight(cfg, t / "run"), capsys, img, "1 x 1", "dataset.min_size", keep=[root, t / "run"])


@row
def f_nan_voxel_in_unlabelled_inference_case(t, capsys, request, **_):
    from func_3d.inference import run_inference

    root = _nnunet(t)
    test_img = sorted((root / "imagesTs").glob("*.nii.gz"))[0]
    _nii_edit(test_img, lambda d: np.where(np.indices(d.shape).sum(0) == 3, np.nan, d.astype(np.float32)))
    cfg = inference_cfg(t, root, request.getfixturevalue("meta_ckpt"), t / "preds")
    refused(lambda: run_inference(cfg), capsys, test_img, "NaN/inf", keep=[root, t / "preds"])
    assert not (t / "preds").exists()


@row
def f_prompts_file_click_label_2(t, capsys, request, **_):
    from func_3d.inference import run_inference

    root = _nnunet(t)
    pf = t / "prompts.json"
    pf.write_text(
        json.dumps({"case_003": {"organ1": [{"slice": 2, "points": [[5, 5], [6, 6]], "labels": [1, 2]}]}}),
        encoding="utf-8",
    )
    cfg = inference_cfg(t, root, request.getfixturevalue("meta_ckpt"), t / "preds", f"prompts_file={pf}")
    line = refused(lambda: run_inference(cfg), capsys, pf, "case_003", "slice 2", "label 2", keep=[root])
    assert "0" in line and "1" in line
    assert not (t / "preds").exists()


@row
def f_truncated_nifti(t, capsys, **_):
    root = _nnunet(t)
    img = sorted((root / "imagesTr").glob("*.nii.gz"))[-1]
    img.write_bytes(img.read_bytes()[: img.stat().st_size // 2])
    refused(preflight(_train3d(t, root), t / "run", "3d"), capsys, img, keep=[root, t / "run"])


@row
def f_empty_label(t, capsys, **_):
    root = _nnunet(t)
    lab = sorted((root / "labelsTr").glob("*.nii.gz"))[-1]
    _nii_edit(lab, np.zeros_like)
    refused(preflight(_train3d(t, root), t / "run", "3d"), capsys, lab, "empty", keep=[root, t / "run"])


@row
def f_label_shape_differs_from_image(t, capsys, **_):
    root = _nnunet(t)
    lab = sorted((root / "labelsTr").glob("*.nii.gz"))[0]
    _nii_edit(lab, lambda d: d[:, :-2])
    refused(preflight(_train3d(t, root), t / "run", "3d"), capsys, lab, "shape", keep=[root, t / "run"])


@row
def f_inf_voxel_in_training_image(t, capsys, **_):
    root = _nnunet(t)
    img = sorted((root / "imagesTr").glob("*.nii.gz"))[-1]
    _nii_edit(img, lambda d: np.where(np.indices(d.shape).sum(0) == 2, np.inf, d.astype(np.float32)))
    refused(preflight(_train3d(t, root), t / "run", "3d"), capsys, img, "NaN/inf", keep=[root, t / "run"])


@row
def f_undeclared_label_id(t, capsys, **_):
    root = _nnunet(t)
    lab = sorted((root / "labelsTr").glob("*.nii.gz"))[-1]
    _nii_edit(lab, lambda d: np.where(np.indices(d.shape).sum(0) == 0, 9, d).astype(d.dtype))
    refused(preflight(_train3d(t, root), t / "run", "3d"), capsys, lab, "undeclared ids [9]", keep=[root])


@row
def f_image_without_mask(t, capsys, **_):
    root = _kvasir(t)
    mask = sorted((root / "masks").glob("*.jpg"))[0]
    mask.unlink()
    refused(preflight(_train2d(t, root), t / "run"), capsys, mask.stem, keep=[root, t / "run"])


@row
def f_dataset_root_missing(t, capsys, **_):
    refused(preflight(_train2d(t, t / "no_data"), t / "run"), capsys, t / "no_data", keep=[t / "run"])


@row
def f_picture_failure_keeps_the_checkpoint(t, capsys, monkeypatch, **_):
    """Correct result: a picture that cannot be drawn is a warning; the epoch's checkpoint is written."""
    import medseg.eval.evaluation as evaluation
    from tests.conftest import run_entry

    def broken(*a, **k):
        raise ValueError("not enough values to unpack (expected 2, got 1)")

    monkeypatch.setattr(evaluation, "_picture", broken)
    root = _kvasir(t)
    run_entry(
        "train_2d",
        ["model=unet", f"dataset.root={root}", "vis=true", "trainer.limit_train_batches=1"],
        t / "run",
    )
    assert (t / "run" / "checkpoint_last.pth").is_file() and (t / "run" / "metrics.csv").is_file()


# ====================================================================================== checkpoints
def _sam2_with(path: Path):
    from sam2_train import build_sam2_model

    return lambda: build_sam2_model("sam2.1_hiera_t", image_size=64, checkpoint=str(path))


@row
def f_text_file_as_checkpoint(t, capsys, **_):
    p = t / "notes.txt"
    p.write_text("model: sam2\n", encoding="utf-8")
    refused(_sam2_with(p), capsys, p, "not a PyTorch weights file", keep=[t])


@row
def f_checkpoint_with_code_pickle(t, capsys, **_):
    marker = t / "PWNED"
    p = evil_pickle(t / "evil.pth", marker)
    refused(_sam2_with(p), capsys, p, "refused", keep=[t])
    assert not marker.exists()


@row
def f_truncated_checkpoint(t, capsys, **_):
    p = t / "half.pth"
    torch.save({"model": {"w": torch.ones(1000)}}, p)
    p.write_bytes(p.read_bytes()[:600])
    refused(_sam2_with(p), capsys, p, keep=[t])


@row
def f_empty_checkpoint(t, capsys, **_):
    p = t / "empty.pth"
    p.write_bytes(b"")
    refused(_sam2_with(p), capsys, p, "empty", keep=[t])


@row
def f_checkpoint_not_found(t, capsys, **_):
    refused(_sam2_with(t / "nope.pth"), capsys, t / "nope.pth", "not found", keep=[t])


@row
def f_checkpoint_of_another_model(t, capsys, **_):
    p = t / "linear.pth"
    torch.save({"model": torch.nn.Linear(2, 2).state_dict()}, p)
    refused(_sam2_with(p), capsys, p, keep=[t])


@row
def f_disk_full_while_writing_checkpoint(t, capsys, monkeypatch, **_):
    import medseg.train.checkpoint as checkpoint

    run = t / "run"
    before = finished_run(run)

    def full(*a, **k):
        raise RuntimeError(
            "[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file"
        )

    monkeypatch.setattr(checkpoint.torch, "save", full)
    target = run / "checkpoint_last.pth"
    refused(lambda: checkpoint.atomic_torch_save({"w": 1}, target), capsys, target, "GiB free", keep=[run])
    assert snapshot(run) == before


@row
def f_disk_full_while_writing_a_table(t, capsys, monkeypatch, **_):
    from medseg.train import runtime

    run = t / "run"
    before = finished_run(run)

    class Full:
        def __init__(self, *a, **k):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def write(self, _):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runtime.os, "fdopen", lambda *a, **k: Full())
    target = run / "run_summary.json"
    refused(lambda: runtime.atomic_write_text(target, "{}"), capsys, target, "No space left", keep=[run])
    assert snapshot(run) == before
