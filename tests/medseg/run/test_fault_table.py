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

import json
import os
import signal

import numpy as np
import pytest

import tests.medseg.run.fault_rows_inputs  # noqa: F401,E402  (registers the data and weights rows first)
from tests.conftest import CLI_SMALL, SMALL, compose_cfg, run_cli, run_torchrun
from tests.fault_helpers import composed, finished_run, inference_cfg, one_line_exit
from tests.medseg.run.fault_table_base import (
    ROWS,
    _kvasir,
    _nii_edit,
    _nnunet,
    _train2d,
    callback,
    preflight,
    refused,
    row,
)


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
    refused(composed("train_2d", [*SMALL, "optim.lr=abc"], t / "run"), capsys, "optim.lr", "'abc'", keep=[t])


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
    blocker.write_text("keep me", encoding="utf-8")
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

    from medseg.train.run_folder import LOCK_NAME

    run = t / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text(
        json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "now"}), encoding="utf-8"
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
    (preds / "metrics.csv").write_text("case_id,dice\ncase_000,0.9\n", encoding="utf-8")
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
def f_cli_override_typo_is_one_line_naming_the_closest_option(t, capsys, **_):
    """Hydra's own composition errors (an option name typo without ``+``) are one line, exit 2, too."""
    r = run_cli("train_2d.py", *CLI_SMALL, "trainer.max_epoch=3", f"hydra.run.dir={t / 'run'}", timeout=300)
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(err) == 1 and "Traceback" not in r.stderr, r.stderr
    assert (
        err[0].startswith("error: ")
        and "trainer.max_epoch" in err[0]
        and "did you mean max_epochs?" in err[0]
    )
    assert "+trainer.max_epoch" not in err[0]  # Hydra's "+key" hint would add a stray key
    assert not (t / "run").exists()


def test_hydra_composition_errors_become_one_line():
    """The line built from Hydra's group-option error: the options listed, not Hydra's search path."""
    from hydra.errors import MissingConfigException

    from medseg.run.cli import _hydra_config_error_line

    ex = MissingConfigException(
        "In 'train_2d': Could not find 'optim/sgdd'\n\nAvailable options in 'optim':\n\tadamw\n\tsgd\n"
        "Config search path:\n\tprovider=hydra, path=pkg://hydra.conf",
        missing_cfg_file="optim/sgdd",
    )
    line = _hydra_config_error_line(ex)
    assert "\n" not in line and "optim/sgdd" in line and "adamw; sgd" in line and "search path" not in line


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
