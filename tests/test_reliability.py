"""Issue 13: nothing lost, nothing executed, every fault one clear line.

One test per fault. Each asserts the exit status, that the one line names the file or option, that no
traceback is printed, and for the lost-results faults that the earlier files are byte-for-byte unchanged.
Entry points are exercised through the same wrappers the command line uses (``user_errors_as_one_line``,
the Hydra callback ``RunFolderCallback``); one real command line proves Hydra writes nothing first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from medseg.data import synthetic
from medseg.run.cli import user_errors_as_one_line
from medseg.run.rundir import LOCK_NAME, RunFolderCallback
from tests.conftest import SMALL, compose_cfg, run_entry

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- helpers
def one_line_exit(fn, capsys, code: int = 1) -> str:
    """Run ``fn`` under the entry points' wrapper; assert exit ``code``, one stderr line, no traceback."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        user_errors_as_one_line(fn)()
    assert e.value.code == code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def callback_exit(cfg, capsys) -> str:
    """What the command line does before Hydra writes anything: the run-folder callback."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        RunFolderCallback().on_run_start(config=cfg)
    assert e.value.code == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def finished_run(folder: Path) -> dict[str, bytes]:
    """A folder as a finished run leaves it (checkpoints, tables, summary, .hydra/)."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("dataset:\n  name: kvasir\n")
    torch.save({"model": {"w": torch.ones(2)}}, folder / "checkpoint_last.pth")
    (folder / "metrics.csv").write_text("epoch,step,val/dice\n1,2,0.5\n")
    (folder / "run_summary.json").write_text(json.dumps({"epochs": 1}))
    return snapshot(folder)


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
    )


def evil_pickle(path: Path, marker: Path) -> Path:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": Evil()}, path)
    return path


@pytest.fixture
def kvasir(tmp_path) -> Path:
    return synthetic.write_kvasir(tmp_path / "kvasir", n=6, size=64)


@pytest.fixture
def nnunet(tmp_path) -> Path:
    return synthetic.write_nnunet(tmp_path / "nn", n_cases=4, depth=6, size=32, n_organs=2)


# ---------------------------------------------------------------- 1. run folders are append-only
def test_cli_second_run_into_finished_folder_is_refused_and_touches_nothing(kvasir, tmp_path):
    """(a) a finished run is never replaced; (b) a start that would fail (another dataset) does not rewrite
    its .hydra/config.yaml either: Hydra writes nothing before the refusal."""
    run = tmp_path / "run"
    before = finished_run(run)
    r = run_cli(
        "train_2d.py",
        f"dataset.root={tmp_path / 'no_such_dataset'}",
        "model.checkpoint=null",
        "trainer.device=cpu",
        f"hydra.run.dir={run}",
    )
    assert r.returncode == 1
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(run) in err[0] and "trainer.resume=" in err[0] and "hydra.run.dir" in err[0]
    assert snapshot(run) == before  # byte for byte, .hydra/ included; no log, no lock left


def test_overwrite_and_resume_are_the_exceptions(tmp_path):
    run = tmp_path / "run"
    finished_run(run)
    for extra in (["overwrite=true"], [f"trainer.resume={run / 'checkpoint_last.pth'}"]):
        cfg = compose_cfg("train_2d", [*SMALL, *extra], run)
        cb = RunFolderCallback()
        cb.on_run_start(config=cfg)
        assert (run / LOCK_NAME).is_file()
        cb.on_run_end(config=cfg)
        assert not (run / LOCK_NAME).exists()
    # a resumed run keeps the folder's .hydra/ and writes its own config beside it
    assert cfg.hydra.output_subdir.startswith(".hydra/resume_")


def test_live_lock_refuses_and_stale_lock_is_taken_over(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    import socket

    live = {"pid": os.getpid(), "host": socket.gethostname(), "started": "now"}
    (run / LOCK_NAME).write_text(json.dumps(live))
    cfg = compose_cfg("train_2d", [*SMALL, "overwrite=true"], run)
    line = callback_exit(cfg, capsys)
    assert str(run) in line and "in progress" in line and str(os.getpid()) in line
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / LOCK_NAME).write_text(json.dumps({**live, "pid": dead.pid}))
    cb = RunFolderCallback()
    cb.on_run_start(config=cfg)  # the dead process's lock is stale: taken over
    assert json.loads((run / LOCK_NAME).read_text())["pid"] == os.getpid()
    cb.on_run_end(config=cfg)


def test_run_dir_under_a_regular_file_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    line = callback_exit(compose_cfg("train_2d", SMALL, blocker / "run"), capsys)
    assert "hydra.run.dir" in line and str(blocker) in line and "is a file" in line
    assert blocker.read_text() == "keep me"


def _meta_ckpt(tmp_path: Path) -> Path:
    from sam2_train import build_sam2_model

    path = tmp_path / "meta.pt"
    torch.save({"model": build_sam2_model("sam2.1_hiera_t", image_size=64).state_dict()}, path)
    return path


def _inference_cfg(tmp_path, nnunet, ckpt, preds, *extra):
    return compose_cfg(
        "inference_3d",
        [
            f"checkpoint={ckpt}",
            "model=sam2.1_hiera_t",
            "model.image_size=64",
            f"dataset.root={nnunet}",
            "split=all",
            f"output_dir={preds}",
            "trainer.device=cpu",
            *extra,
        ],
        tmp_path / "hydra_inf",
    )


def test_inference_into_used_output_dir_keeps_its_metrics(tmp_path, nnunet, capsys):
    """(c) another split into the same output_dir: refused, metrics.csv of the first one unchanged."""
    from func_3d.inference import run_inference

    preds = tmp_path / "preds"
    preds.mkdir()
    (preds / "metrics.csv").write_text("case_id,dice\ncase_000,0.9\n")  # an earlier run on another split
    before = snapshot(preds)
    cfg = _inference_cfg(tmp_path, nnunet, _meta_ckpt(tmp_path), preds)
    line = one_line_exit(lambda: run_inference(cfg), capsys)
    assert str(preds) in line and "overwrite=true" in line
    assert snapshot(preds) == before


def test_changed_split_with_existing_splits_json_is_refused(tmp_path, kvasir, capsys):
    """(d) resuming in a folder whose splits.json was drawn with other split settings."""
    from medseg.run.context import prepare_data

    run = tmp_path / "run"
    first = compose_cfg("train_2d", [*SMALL, f"dataset.root={kvasir}"], run)
    prepare_data(first, run, mode="2d")
    (run / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.masked_copy(first, ["dataset", "seed"]), run / ".hydra" / "config.yaml")
    before = snapshot(run)
    changed = compose_cfg("train_2d", [*SMALL, f"dataset.root={kvasir}", "dataset.split.val_ratio=0.5"], run)
    line = one_line_exit(lambda: prepare_data(changed, run, mode="2d"), capsys)
    assert "dataset.split.val_ratio: 0.5 differs from 0.1" in line and str(run / "splits.json") in line
    assert snapshot(run) == before
    prepare_data(first, run, mode="2d")  # the same settings continue


# ---------------------------------------------------------------- 2. no file passed by a user runs code
def test_cli_yolo_weights_with_code_are_refused(kvasir, tmp_path):
    pytest.importorskip("ultralytics")
    marker = tmp_path / "PWNED"
    weights = evil_pickle(tmp_path / "evil.pt", marker)
    r = run_cli(
        "train_2d.py",
        "model=yolo_seg",
        f"model.net.weights={weights}",
        f"dataset.root={kvasir}",
        "trainer.device=cpu",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert r.returncode == 1, r.stderr[-2000:]
    err = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("[")]
    assert len(err) == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(weights) in err[0] and "refused" in err[0] and "posix.system" in err[0]
    assert not marker.exists()
    assert not (tmp_path / "run" / "checkpoint_last.pth").exists()


def test_real_yolo_weights_pass_the_check(tmp_path):
    pytest.importorskip("ultralytics")
    from traditional_models.yolo import _yolo, check_yolo_weights

    path = tmp_path / "yolo.pt"
    _yolo("yolo11n-seg.yaml").save(str(path))
    assert check_yolo_weights(path) == path


@pytest.mark.parametrize("where", ["model.checkpoint", "trainer.resume", "encoder_weights"])
def test_code_pickles_are_refused_everywhere(where, tmp_path, capsys):
    from sam2_train.checkpoint import read_checkpoint
    from traditional_models.resnet50_frozen_decoder import load_resnet_weights

    marker = tmp_path / "PWNED"
    path = evil_pickle(tmp_path / "evil.pth", marker)
    if where == "encoder_weights":
        import torchvision

        line = one_line_exit(lambda: load_resnet_weights(torchvision.models.resnet18(), path), capsys)
    else:  # SAM2 weights and resume both open the file with read_checkpoint
        line = one_line_exit(lambda: read_checkpoint(path), capsys)
    assert str(path) in line
    assert not marker.exists()


@pytest.mark.parametrize("text", ["hello world\n", "abc", "model: sam2\nlr: 1\n"])
def test_text_file_as_checkpoint_is_one_line_naming_it(text, tmp_path, capsys):
    from sam2_train import build_sam2_model

    path = tmp_path / "notes.txt"
    path.write_text(text)
    line = one_line_exit(
        lambda: build_sam2_model("sam2.1_hiera_t", image_size=64, checkpoint=str(path)), capsys
    )
    assert str(path) in line and "not a PyTorch weights file" in line


# ---------------------------------------------------------------- 3. complete pre-flight
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


# ---------------------------------------------------------------- 4. config validated at start
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
    line = callback_exit(compose_cfg("train_2d", [*SMALL, override], run), capsys)
    value = override.split("=", 1)[1]
    assert f"{option}: expected" in line and value in line
    assert not run.exists()


def test_func_3d_option_is_validated(tmp_path, capsys):
    line = callback_exit(compose_cfg("train_3d", [*SMALL, "func_3d.video_length=0"], tmp_path / "r"), capsys)
    assert "func_3d.video_length" in line and "got 0" in line


def test_resume_with_another_image_size_is_refused(kvasir, tmp_path, capsys):
    run = tmp_path / "run"
    run_entry("train_2d", [f"dataset.root={kvasir}", "trainer.limit_train_batches=1"], run)
    before = snapshot(run)
    ckpt = run / "checkpoint_last.pth"
    from medseg.run.app import run as app_run

    cfg = compose_cfg(
        "train_2d", [*SMALL, f"dataset.root={kvasir}", f"trainer.resume={ckpt}", "model.image_size=96"], run
    )
    line = one_line_exit(lambda: app_run(cfg, mode="2d", task_key="task_2d"), capsys)
    assert str(ckpt) in line and "model.image_size=96" in line and "model.image_size=64" in line
    assert snapshot(run) == before


def test_prompts_file_naming_no_known_case_is_refused(tmp_path, nnunet, capsys):
    from func_3d.inference import run_inference

    pf = tmp_path / "prompts.json"
    pf.write_text(json.dumps({"someone_else": {"organ1": [{"slice": 1, "box": [1, 1, 5, 5]}]}}))
    preds = tmp_path / "preds"
    cfg = _inference_cfg(tmp_path, nnunet, _meta_ckpt(tmp_path), preds, f"prompts_file={pf}")
    line = one_line_exit(lambda: run_inference(cfg), capsys)
    assert str(pf) in line and "names no case" in line
    assert not preds.exists()


def test_compare_out_naming_a_file_is_one_line(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare_tool", ROOT / "tools" / "compare.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "report.md"
    out.write_text("mine")
    (tmp_path / "runA").mkdir()
    capsys.readouterr()
    assert tool.main([str(tmp_path / "runA"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(out) in err and "Traceback" not in err
    assert out.read_text() == "mine"


# ---------------------------------------------------------------- 5. Ctrl-C (the checkpoint itself: issue 14)
def test_ctrl_c_is_one_line(capsys):
    def interrupted():
        raise KeyboardInterrupt

    line = one_line_exit(interrupted, capsys, code=130)
    assert "interrupted" in line


def test_validation_table_covers_every_numeric_option_of_the_roots():
    """Every int/float option of the validated groups in the shipped configs has a rule."""
    from medseg.run.config_check import RULES

    for root in ("train_2d", "train_3d"):
        cfg = compose_cfg(root, [], Path("/tmp/unused"))
        for group in ("trainer", "optim", "scheduler", "func_2d", "func_3d", "prompt"):
            for key, value in (cfg.get(group) or {}).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    assert f"{group}.{key}" in RULES, f"{root}: {group}.{key} has no validation rule"


def test_sweep_into_a_used_sweep_dir_is_refused(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    before = finished_run(sweep / "0_model=unet")
    cfg = compose_cfg("train_2d", [*SMALL, f"hydra.sweep.dir={sweep}"], tmp_path / "unused")
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        RunFolderCallback().on_multirun_start(config=cfg)
    assert e.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(sweep) in err and "hydra.sweep.dir" in err and "Traceback" not in err
    assert snapshot(sweep / "0_model=unet") == before
