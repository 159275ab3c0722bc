"""Issue 13, inputs and config: every fault found before step one, as one clear line.

The complete pre-flight finds a bad case anywhere in a dataset (NaN/inf, undeclared label ids, a 2D
file in a 3D dataset, an npz without labels, an RGBA mask) before training starts, and remembers its
verdicts; config options are validated before the run folder exists; Ctrl-C is one line too. Each
test asserts the exit status, that the line names the file or option, and that no traceback is
printed. Run folders and weights files: ``test_reliability_runs.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from medseg.data import synthetic
from tests.conftest import SMALL, compose_cfg, run_cli
from tests.fault_helpers import (
    callback_exit,
    composed_exit,
    inference_cfg,
    meta_ckpt,
    one_line_exit,
)


# ---------------------------------------------------------------- complete pre-flight
def _preflight(cfg, tmp_path):
    from medseg.run.context import prepare_data

    return prepare_data(
        cfg, tmp_path / "run", mode="3d" if "nnunet" in str(cfg.dataset.name) else "2d", preflight=True
    )


def _last_case_image(nnunet: Path) -> Path:
    return sorted((nnunet / "imagesTr").glob("*.nii.gz"))[-1]


def test_nan_in_a_later_case_is_found_before_step_one(nnunet, tmp_path, capsys):
    img = _last_case_image(nnunet)
    nii = nib.load(str(img))
    data = np.asarray(nii.dataobj, dtype=np.float32)
    data[1, 1, 1] = np.inf
    nib.save(nib.Nifti1Image(data, nii.affine), str(img))
    cfg = compose_cfg("train_3d", [*SMALL, "dataset=nnunet", f"dataset.root={nnunet}"], tmp_path / "run")
    line = one_line_exit(lambda: _preflight(cfg, tmp_path), capsys)
    assert str(img) in line and "NaN/inf" in line
    assert not (tmp_path / "run" / "splits.json").exists()  # nothing written by a refused start


def test_undeclared_label_id_in_a_later_case(nnunet, tmp_path, capsys):
    lab = sorted((nnunet / "labelsTr").glob("*.nii.gz"))[-1]
    nii = nib.load(str(lab))
    data = np.asarray(nii.dataobj).copy()
    data[0, 0, 0] = 9
    nib.save(nib.Nifti1Image(data, nii.affine, nii.header), str(lab))
    cfg = compose_cfg("train_3d", [*SMALL, "dataset=nnunet", f"dataset.root={nnunet}"], tmp_path / "run")
    line = one_line_exit(lambda: _preflight(cfg, tmp_path), capsys)
    assert str(lab) in line and "undeclared ids [9]" in line


def _make_last_case_2d(nnunet: Path) -> Path:
    """Image and label of the last training case become 2D NIfTI files (one slice, labelled)."""
    img = _last_case_image(nnunet)
    lab = nnunet / "labelsTr" / img.name.replace("_0000", "")
    for f in (img, lab):
        nii = nib.load(str(f))
        data = np.asarray(nii.dataobj)[:, :, 1]
        if f == lab:
            data = np.zeros(data.shape, np.uint8)
            data[5:9, 5:9] = 1
        nib.save(nib.Nifti1Image(data, nii.affine), str(f))
    return img


def test_2d_nifti_in_a_3d_dataset(nnunet, tmp_path, capsys):
    img = _make_last_case_2d(nnunet)
    cfg = compose_cfg("train_3d", [*SMALL, "dataset=nnunet", f"dataset.root={nnunet}"], tmp_path / "run")
    line = one_line_exit(lambda: _preflight(cfg, tmp_path), capsys)
    assert str(img) in line and "2D image" in line and "dataset.dim=3" in line


def test_npz_without_gts_is_found_before_step_one(tmp_path, capsys):
    root = synthetic.write_npz(tmp_path / "npz", n_cases=3, depth=6, size=32)
    f = sorted(root.rglob("*.npz"))[-1]
    with np.load(f) as z:
        np.savez(f, imgs=z["imgs"], spacing=z["spacing"])
    cfg = compose_cfg("train_3d", [*SMALL, "dataset=npz", f"dataset.root={root}"], tmp_path / "run")
    from medseg.run.context import prepare_data

    line = one_line_exit(lambda: prepare_data(cfg, tmp_path / "run", mode="3d", preflight=True), capsys)
    assert str(f) in line and "'gts' missing" in line


def test_rgba_mask_with_object_in_alpha_is_one_line(tmp_path, capsys):
    root = synthetic.write_folder2d(tmp_path / "f2d", n=4, size=32)
    mask = sorted((root / "masks").glob("*.png"))[-1]
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[8:20, 8:20, 3] = 255  # the object only in the alpha channel: grey conversion empties it
    Image.fromarray(rgba, "RGBA").save(mask)
    cfg = compose_cfg("train_2d", [*SMALL, "dataset=folder2d", f"dataset.root={root}"], tmp_path / "run")
    from medseg.run.context import prepare_data

    line = one_line_exit(lambda: prepare_data(cfg, tmp_path / "run", mode="2d", preflight=True), capsys)
    assert str(mask) in line


def test_verify_tool_reports_npz_without_gts_and_2d_nifti(tmp_path):
    root = synthetic.write_npz(tmp_path / "npz", n_cases=2, depth=6, size=32)
    f = sorted(root.rglob("*.npz"))[-1]
    with np.load(f) as z:
        np.savez(f, imgs=z["imgs"], spacing=z["spacing"])
    r = run_cli("tools/verify_dataset.py", "dataset=npz", f"dataset.root={root}", timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"{f}: no label in this file (key 'gts' missing)" in r.stdout
    nn = synthetic.write_nnunet(tmp_path / "nn", n_cases=2, depth=4, size=16, n_organs=1)
    img = _make_last_case_2d(nn)
    r = run_cli("tools/verify_dataset.py", "dataset=nnunet", f"dataset.root={nn}", timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(img) in r.stdout and "2D image" in r.stdout


def test_preflight_verdicts_are_remembered(nnunet, tmp_path):
    from medseg.data.datasets import NnUNetDataset
    from medseg.data.verify import verify_dataset

    memo = tmp_path / "memo"
    ds = NnUNetDataset(nnunet)
    assert verify_dataset(ds, memo_dir=memo) == []
    assert len(list(memo.glob("*.json"))) == len(ds.all_case_ids)
    ds._load = lambda cid: (_ for _ in ()).throw(AssertionError("read again"))  # unchanged cases: not read
    assert verify_dataset(ds, memo_dir=memo) == []
    img = _last_case_image(nnunet)
    nii = nib.load(str(img))
    data = np.asarray(nii.dataobj, dtype=np.float32)
    data[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(data, nii.affine), str(img))  # a changed file is checked again
    problems = verify_dataset(NnUNetDataset(nnunet), memo_dir=memo)
    assert problems == [f"{img}: image holds 1 NaN/inf values"]


# ---------------------------------------------------------------- config validated at start
@pytest.mark.parametrize(
    "override, option",
    [
        ("trainer.max_epochs=-1", "trainer.max_epochs"),
        ("trainer.val_freq=0", "trainer.val_freq"),
        ("optim.lr=abc", "optim.lr"),
        ("trainer.batch_size=0", "trainer.batch_size"),
        ("prompt.n_pos=-2", "prompt.n_pos"),
        ("func_2d.bank_min_iou=2", "func_2d.bank_min_iou"),
        ("scheduler.warmup_steps=1.5", "scheduler.warmup_steps"),
    ],
)
def test_bad_numeric_option_is_refused_before_the_folder_exists(override, option, tmp_path, capsys):
    run = tmp_path / "run"
    line = composed_exit("train_2d", [*SMALL, override], run, capsys)  # a type at compose, a range after
    value = override.split("=", 1)[1]
    assert f"{option}: expected" in line and value in line
    assert not run.exists()


def test_func_3d_option_is_validated(tmp_path, capsys):
    line = callback_exit(compose_cfg("train_3d", [*SMALL, "func_3d.video_length=0"], tmp_path / "r"), capsys)
    assert "func_3d.video_length" in line and "got 0" in line


def test_every_numeric_option_of_the_schemas_has_a_rule():
    """Every int/float option (trainer, optim, scheduler, func_2d, func_3d, prompt, eval_prompt, roots) is a
    schema field with a range rule, and every numeric key of the composed roots belongs to a schema."""
    import dataclasses
    import types
    import typing

    from medseg import schema
    from medseg.data.prompts import PromptConfig
    from medseg.options import rule_of

    classes = [c for c in vars(schema).values() if dataclasses.is_dataclass(c)] + [PromptConfig]
    for cls in classes:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.name == "threshold":  # a logit: any real number (rule: finite)
                assert rule_of(f) is not None
            hint = hints[f.name]
            kinds = (
                set(typing.get_args(hint))
                if typing.get_origin(hint) in (typing.Union, types.UnionType)
                else {hint}
            )
            if kinds & {int, float} and not f.name.startswith("_"):
                assert rule_of(f) is not None, f"{cls.__name__}.{f.name} has no rule"
    for root in ("train_2d", "train_3d"):
        cfg = compose_cfg(root, [], Path("/tmp/unused"))
        for group in ("trainer", "optim", "scheduler", "func_2d", "func_3d", "prompt", "eval_prompt"):
            typ = OmegaConf.get_type(cfg[group])
            assert dataclasses.is_dataclass(typ), f"{root}: {group} has no schema"
            names = {f.name for f in dataclasses.fields(typ)}
            assert set(cfg[group].keys()) <= names, f"{root}: {group} has keys outside {typ.__name__}"


def test_prompts_file_naming_no_known_case_is_refused(tmp_path, nnunet, capsys):
    from func_3d.inference import run_inference

    pf = tmp_path / "prompts.json"
    pf.write_text(
        json.dumps({"someone_else": {"organ1": [{"slice": 1, "box": [1, 1, 5, 5]}]}}), encoding="utf-8"
    )
    preds = tmp_path / "preds"
    cfg = inference_cfg(tmp_path, nnunet, meta_ckpt(tmp_path), preds, f"prompts_file={pf}")
    line = one_line_exit(lambda: run_inference(cfg), capsys)
    assert str(pf) in line and "names no case" in line
    assert not preds.exists()


# ---------------------------------------------------------------- Ctrl-C (the checkpoint itself: issue 14)
def test_ctrl_c_is_one_line(capsys):
    def interrupted():
        raise KeyboardInterrupt

    line = one_line_exit(interrupted, capsys, code=130)
    assert "interrupted" in line
