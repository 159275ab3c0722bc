"""Issue 20, the fault table: bad inputs and faults across data, checkpoints, config, signals, disk and
launchers, one row each. Every row asserts either the correct result or ONE line ``error: ...`` naming
the file or option, exit status 2, and every file it could touch byte-for-byte unchanged (a snapshot
before and after).

Rows run in-process as the command line runs them (the run-folder callback, the pre-flight, the entry
points' wrapper ``user_errors_as_one_line``); a few go through a real command line (``cli_*``,
``torchrun_*``) to prove the whole path. Faults the machine cannot produce (a full disk, a read-only file
system for root) are injected at the operating-system call that would fail.
"""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from medseg.data import synthetic
from tests.conftest import CLI_SMALL, SMALL, compose_cfg, run_cli, run_torchrun
from tests.fault_helpers import evil_pickle, finished_run, inference_cfg, one_line_exit, snapshot

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
        json.dumps({"case_003": {"organ1": [{"slice": 2, "points": [[5, 5], [6, 6]], "labels": [1, 2]}]}})
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
    p.write_text("model: sam2\n")
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


# ====================================================================================== config
@row
def f_added_key_of_a_group_name_typo(t, capsys, **_):
    cfg = compose_cfg("train_2d", [*SMALL, "+optimm=sgd"], t / "run")
    line = refused(callback(cfg), capsys, "optimm", "optim", keep=[t])
    assert "did you mean" in line
    assert not (t / "run").exists()


@row
def f_added_key_typo_in_trainer(t, capsys, **_):
    cfg = compose_cfg("train_2d", [*SMALL, "+trainer.max_epoch=3"], t / "run")
    refused(callback(cfg), capsys, "trainer.max_epoch", "trainer.max_epochs", keep=[t])
    assert not (t / "run").exists()


@row
def f_added_constructor_argument_is_accepted(t, capsys, **_):
    """Correct result: ``+dataset.<kw>=`` reaches the dataset's constructor (it checks its own arguments)."""
    from medseg.run.config_check import validate_config

    validate_config(compose_cfg("train_2d", [*SMALL, "+dataset.min_size=4", "+arm=sam_zero_shot"], t / "run"))


@row
def f_learning_rate_not_a_number(t, capsys, **_):
    cfg = compose_cfg("train_2d", [*SMALL, "optim.lr=abc"], t / "run")
    refused(callback(cfg), capsys, "optim.lr", "'abc'", keep=[t])


@row
def f_val_freq_zero(t, capsys, **_):
    cfg = compose_cfg("train_2d", [*SMALL, "trainer.val_freq=0"], t / "run")
    refused(callback(cfg), capsys, "trainer.val_freq", keep=[t])


@row
def f_evaluation_with_random_weights_into_trained_run(t, capsys, **_):
    run = t / "run"
    finished_run(run)
    cfg = compose_cfg("train_2d", [*SMALL, "overwrite=true", "train=false"], run)
    refused(callback(cfg), capsys, run, "train=false", "model.checkpoint", keep=[run])


@row
def f_evaluation_of_the_folders_own_checkpoint_is_accepted(t, capsys, **_):
    """Correct result: ``train=false`` scoring the run's own checkpoint into its folder is allowed."""
    from medseg.run.rundir import RunFolderCallback

    run = t / "run"
    finished_run(run)
    ck = run / "checkpoint_last.pth"
    cfg = compose_cfg("train_2d", [*SMALL, "overwrite=true", "train=false", f"model.checkpoint={ck}"], run)
    cb = RunFolderCallback()
    cb.on_run_start(config=cfg)
    cb.on_run_end(config=cfg)


# ====================================================================================== run folders, disk
@row
def f_run_dir_under_a_regular_file(t, capsys, **_):
    blocker = t / "a_file"
    blocker.write_text("keep me")
    refused(
        callback(compose_cfg("train_2d", SMALL, blocker / "run")), capsys, "hydra.run.dir", blocker, keep=[t]
    )


@row
def f_read_only_run_dir(t, capsys, monkeypatch, **_):
    """A folder the user may not write: chmod, and for root, whom permissions do not stop, the answer the
    kernel gives on a read-only file system (``access`` fails with EROFS) is injected."""
    parent = t / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    if os.geteuid() == 0:
        real_access = os.access
        monkeypatch.setattr(
            os,
            "access",
            lambda p, mode, **k: False if str(p).startswith(str(parent)) else real_access(p, mode, **k),
        )
    try:
        cfg = compose_cfg("train_2d", SMALL, parent / "run")
        refused(callback(cfg), capsys, "hydra.run.dir", parent / "run", keep=[parent])
    finally:
        parent.chmod(0o755)


@row
def f_finished_run_folder(t, capsys, **_):
    run = t / "run"
    finished_run(run)
    refused(callback(compose_cfg("train_2d", SMALL, run)), capsys, run, "trainer.resume=", keep=[run])


@row
def f_live_run_lock(t, capsys, **_):
    import socket

    from medseg.run.rundir import LOCK_NAME

    run = t / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text(
        json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "now"})
    )
    cfg = compose_cfg("train_2d", [*SMALL, "overwrite=true"], run)
    refused(callback(cfg), capsys, run, "in progress", keep=[run])


@row
def f_used_sweep_dir(t, capsys, **_):
    from medseg.run.rundir import RunFolderCallback

    sweep = t / "sweep"
    finished_run(sweep / "0_model=unet")
    cfg = compose_cfg("train_2d", [*SMALL, f"hydra.sweep.dir={sweep}"], t / "unused")
    refused(lambda: RunFolderCallback().on_multirun_start(config=cfg), capsys, sweep, keep=[sweep])


@row
def f_used_inference_output_dir(t, capsys, request, **_):
    from func_3d.inference import run_inference

    root, preds = _nnunet(t), t / "preds"
    preds.mkdir()
    (preds / "metrics.csv").write_text("case_id,dice\ncase_000,0.9\n")
    cfg = inference_cfg(t, root, request.getfixturevalue("meta_ckpt"), preds)
    refused(lambda: run_inference(cfg), capsys, preds, "overwrite=true", keep=[preds])


# ====================================================================================== launchers, signals
@row
def f_slurm_launcher_off_a_cluster(t, capsys, monkeypatch, **_):
    from medseg.run.rundir import RunFolderCallback

    monkeypatch.setenv("PATH", str(t))  # no srun / sbatch here
    cfg = compose_cfg("train_2d", [*SMALL, "launcher=slurm", f"hydra.sweep.dir={t / 'sweep'}"], t / "unused")
    refused(
        lambda: RunFolderCallback().on_multirun_start(config=cfg), capsys, "launcher=slurm", "srun", keep=[t]
    )
    assert not (t / "sweep").exists()


@row
def f_ctrl_c_during_preflight(t, capsys, monkeypatch, **_):
    import medseg.data.verify as verify

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(verify, "verify_dataset", interrupted)
    root = _kvasir(t)
    capsys.readouterr()
    line = one_line_exit(preflight(_train2d(t, root), t / "run"), capsys, code=130)
    assert "interrupted" in line and not (t / "run").exists()


@row
def f_sigterm_mid_epoch_writes_checkpoint_and_exits_143(t, capsys, monkeypatch, **_):
    """Correct result: SIGTERM mid-epoch writes checkpoint_last.pth and ends with one line, exit 128 + 15."""
    from medseg.train.engine import Engine
    from tests.conftest import run_entry

    real = Engine._optimizer_step

    def step_then_signal(self):
        real(self)
        if self.step == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Engine, "_optimizer_step", step_then_signal)
    root = _kvasir(t)
    line = one_line_exit(
        lambda: run_entry(
            "train_2d", ["model=unet", f"dataset.root={root}", "trainer.max_epochs=2"], t / "run"
        ),
        capsys,
        143,
    )
    assert "SIGTERM" in line and "trainer.resume=" in line
    assert (t / "run" / "checkpoint_last.pth").is_file()


# ====================================================================================== real command lines
@row
def f_cli_added_key_typo(t, capsys, **_):
    r = run_cli("train_2d.py", *CLI_SMALL, "+optimm=sgd", f"hydra.run.dir={t / 'run'}", timeout=300)
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(err) == 1 and "optimm" in err[0] and "Traceback" not in r.stderr, (
        r.stderr
    )
    assert not (t / "run").exists()


@row
def f_cli_slurm_launcher_off_a_cluster(t, capsys, **_):
    sweep = t / "sweep"
    r = run_cli(
        "train_2d.py", "-m", "launcher=slurm", *CLI_SMALL, f"hydra.sweep.dir={sweep}",
        timeout=300, env={"PATH": f"{t}:/usr/bin:/bin"},
    )  # fmt: skip
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(err) == 1 and "srun" in err[0] and "Traceback" not in r.stderr, r.stderr
    assert not sweep.exists()


@row
def f_torchrun_one_rank_refuses(t, capsys, **_):
    """Rank 0's pre-flight refuses the dataset: one line from the processes, every rank exits 2; the other
    rank prints no gloo traceback. (torchrun itself then reports the failed child, exit 1.)"""
    root = _nnunet(t)
    lab = sorted((root / "labelsTr").glob("*.nii.gz"))[-1]
    _nii_edit(lab, lambda d: np.where(np.indices(d.shape).sum(0) == 0, 9, d).astype(d.dtype))
    r = run_torchrun(
        "train_2d.py", *CLI_SMALL, "dataset=nnunet", f"dataset.root={root}", f"hydra.run.dir={t / 'run'}",
        timeout=300, env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    ours = r.stderr.split("torch.distributed.elastic", 1)[0]  # before torchrun's own report
    errors = [ln for ln in ours.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and str(lab) in errors[0], r.stderr
    assert "Error executing job" not in r.stderr and "gloo" not in ours.lower(), r.stderr
    assert "exitcode  : 2" in r.stderr, r.stderr


# ====================================================================================== the table
@pytest.mark.parametrize("name", list(ROWS))
def test_fault(name, tmp_path, capsys, monkeypatch, request):
    ROWS[name](tmp_path, capsys, monkeypatch=monkeypatch, request=request)


def test_the_table_has_at_least_30_rows():
    assert len(ROWS) >= 30
