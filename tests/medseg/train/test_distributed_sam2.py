"""The same guarantees as tests/medseg/train/test_distributed.py on the real SAM2 tasks (Hiera-T, 64 px, random init):
2 processes under torchrun and under ``launcher=submitit_local`` equal 1 process, and a SIGTERM mid-epoch
followed by ``trainer.resume=auto`` ends with the uninterrupted weights and tables."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import torch

from medseg.eval.tables import read_csv
from medseg.train.preemption import RunInterrupted
from tests.conftest import ROOT, checkpoint_weights, run_cli, run_entry, run_torchrun
from tests.medseg.helpers import DDP_SMALL, init_weights, max_abs_diff, untimed_rows

COMMON = [*DDP_SMALL, "logger=none"]


def _run(args: list[str], *, torchrun: bool = False) -> subprocess.CompletedProcess:
    """``python <args>``, or 2 processes of it under torchrun, one thread each; asserts that it succeeded."""
    r = (run_torchrun if torchrun else run_cli)(*args, timeout=900, env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    return r


def _train(entry: str, overrides: list[str], out, how: str):
    """Train in ``out`` (a run folder) as 1 process, 2 torchrun processes or 2 submitit_local tasks."""
    args = [entry, *COMMON, *overrides]
    if how == "one":
        _run([*args, "trainer.batch_size=2", f"hydra.run.dir={out}"])
        return out
    if how == "torchrun":
        _run([*args, "trainer.batch_size=1", f"hydra.run.dir={out}"], torchrun=True)
        return out
    _run(
        [*args[:1], "-m", "launcher=submitit_local", *args[1:], "trainer.batch_size=1"]
        + [f"hydra.sweep.dir={out}", "hydra.sweep.subdir=job", "hydra.launcher.tasks_per_node=2"]
    )
    return out / "job"


DIMS = {
    "2d": ("train_2d.py", ["dataset=kvasir", "dataset.root={data}/kvasir"]),
    "3d": (
        "train_3d.py",
        ["dataset=nnunet", "dataset.root={data}/nnunet", "func_3d.video_length=4", "optim.lr=5e-2"],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("how", ["torchrun", "submitit_local"])
@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_two_processes_equal_one_process(dim, how, data_root, tmp_path):
    """2 processes x batch 1 == 1 process x batch 2 after 2 SGD steps (3D: 1), through the same
    DistributedDataParallel path whether the ranks come from torchrun or from submitit. Tolerance (max abs
    weight difference): 2D 1e-5 (fp32 sums in another order; SGD does not amplify that noise as Adam
    would); 3D 2e-4, because the 3D step itself differs by ~9e-5 after this step between running the
    2 clips batched and one after the other in one process (measured), rounding that the propagation's
    thresholds and argmaxes carry on; the weights move > 10x the tolerance."""
    entry, extra = DIMS[dim]
    tol = 1e-5 if dim == "2d" else 2e-4
    extra = [e.format(data=data_root) for e in extra]
    one = _train(entry, extra, tmp_path / "one", "one")
    two = _train(entry, extra, tmp_path / "two", how)
    log = (two / f"{entry[:-3]}.log").read_text(encoding="utf-8")
    assert "DistributedDataParallel over 2 processes" in log
    a, b = checkpoint_weights(one / "checkpoint_last.pth"), checkpoint_weights(two / "checkpoint_last.pth")
    init = init_weights(5)
    assert max_abs_diff(a, init) > 10 * tol, (
        "training did not move the weights: the comparison would be empty"
    )
    assert max_abs_diff(a, b) < tol
    steps = [torch.load(d / "checkpoint_last.pth", weights_only=True)["step"] for d in (one, two)]
    assert steps[0] == steps[1] == (2 if dim == "2d" else 1)  # 3D: 3 training volumes = 1 global batch of 2


@pytest.mark.slow
def test_sam2_2d_sigterm_mid_epoch_resume_is_exact(tmp_path, monkeypatch):
    """SIGTERM during step 3 of the second 8-step epoch: checkpoint_last.pth at batch 3 of that epoch, one
    line; resuming in place ends with the uninterrupted weights (max abs diff <= 1e-6) and metrics.csv /
    val_cases.csv equal the uninterrupted run's (epoch 1's rows kept, none twice)."""
    from func_2d.task import SAM2ImageTask
    from medseg.data import synthetic

    data = synthetic.write_kvasir(tmp_path / "kvasir", n=12, size=64)
    args = [
        f"dataset.root={data}",
        "model.checkpoint=null",
        "trainer.batch_size=1",
        "trainer.limit_train_batches=8",
        "trainer.max_epochs=2",
        "trainer.limit_val_batches=1",
        "optim=sgd",
        "optim.lr=1e-2",
        "seed=5",
        "logger=none",
    ]
    run_entry("train_2d", args, tmp_path / "full")
    step = SAM2ImageTask.training_step
    calls = []

    def killed_at_11(self, model, batch):
        calls.append(1)
        if len(calls) == 11:
            os.kill(os.getpid(), signal.SIGTERM)
        return step(self, model, batch)

    monkeypatch.setattr(SAM2ImageTask, "training_step", killed_at_11)
    run = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        run_entry("train_2d", args, run)
    monkeypatch.setattr(SAM2ImageTask, "training_step", step)
    ck = torch.load(run / "checkpoint_last.pth", weights_only=True)
    assert (ck["epoch"], ck["batch_in_epoch"], ck["step"]) == (1, 3, 11)
    first = read_csv(run / "metrics.csv")
    run_entry("train_2d", [*args, "trainer.resume=auto"], run)
    full = tmp_path / "full"
    assert (
        max_abs_diff(
            checkpoint_weights(full / "checkpoint_last.pth"), checkpoint_weights(run / "checkpoint_last.pth")
        )
        <= 1e-6
    )
    assert read_csv(run / "metrics.csv")[:1] == first
    assert untimed_rows(run / "metrics.csv") == untimed_rows(full / "metrics.csv")
    assert untimed_rows(run / "val_cases.csv") == untimed_rows(full / "val_cases.csv")


@pytest.mark.slow
def test_ctrl_c_writes_checkpoint_one_line_and_resumes_in_place(data_root, tmp_path):
    """A real Ctrl-C (SIGINT) to ``train_2d.py`` mid-epoch: the step finishes, checkpoint_last.pth holds
    it, stderr ends with one line naming the resume option, exit code 130; ``trainer.resume=auto`` in the
    same folder finishes the run with one metrics.csv row per epoch."""
    import time

    out = tmp_path / "run"
    args = [
        sys.executable,
        "train_2d.py",
        *COMMON,
        "dataset=kvasir",
        f"dataset.root={data_root / 'kvasir'}",
        "trainer.batch_size=1",
        "trainer.limit_train_batches=6",
        "trainer.max_epochs=2",
        "trainer.save_every_n_steps=1",
        f"hydra.run.dir={out}",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 600
    while not (out / "checkpoint_last.pth").exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=600)
    assert p.returncode == 130, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("stopped by SIGINT after step ") and "trainer.resume=" in last, err[-2000:]
    ck = torch.load(out / "checkpoint_last.pth", weights_only=True)
    assert ck["step"] >= 1
    _run([*args[1:], "trainer.resume=auto"])
    rows = read_csv(out / "metrics.csv")
    per = int(rows[0]["step"])  # steps per epoch
    assert [r["epoch"] for r in rows] == ["1", "2"] and [int(r["step"]) for r in rows] == [per, 2 * per]
    assert ck["step"] == ck["epoch"] * per + ck["batch_in_epoch"]


@pytest.mark.slow
@pytest.mark.parametrize("dim", ["2d", "3d"])
def test_distributed_validation_writes_the_single_process_tables(dim, data_root, tmp_path):
    """``train=false`` scored by 2 torchrun processes (cases sharded, rows gathered on rank 0) writes the
    val_cases.csv and metrics.csv of 1 process: same rows, same order (the training split, so that the
    cases do not divide evenly between the ranks)."""
    entry, extra = DIMS[dim]
    args = [entry, *COMMON, *[e.format(data=data_root) for e in extra], "train=false", "eval_split=train"]
    args = [a for a in args if not a.startswith("trainer.limit_val_batches")]
    one, two = tmp_path / "one", tmp_path / "two"
    _run([*args, f"hydra.run.dir={one}"])
    _run([*args, f"hydra.run.dir={two}"], torchrun=True)
    cases = read_csv(one / "val_cases.csv")
    n = len({r["case_id"] for r in cases})
    assert n >= 3
    log = (two / f"{entry[:-3]}.log").read_text(encoding="utf-8")
    assert f"evaluation shard 0/2: {(n + 1) // 2} of {n} cases" in log  # each rank scored its share
    assert f"evaluation shard 1/2: {n // 2} of {n} cases" in log
    assert (two / "val_cases.csv").read_text(encoding="utf-8") == (one / "val_cases.csv").read_text(
        encoding="utf-8"
    )
    assert untimed_rows(two / "metrics.csv") == untimed_rows(one / "metrics.csv")


@pytest.mark.slow
def test_inference_3d_two_processes_write_the_files_of_one(data_root, tmp_path):
    """``inference_3d.py`` under torchrun: each case written once (by the rank that scored it), one
    metrics.csv with the single-process rows in the same order, the same masks."""
    import numpy as np

    from sam2_train import build_sam2_model

    ckpt = tmp_path / "meta_like.pt"
    torch.manual_seed(0)
    torch.save(
        {"model": build_sam2_model("sam2.1_hiera_t", image_size=64, checkpoint=None).state_dict()}, ckpt
    )
    args = [
        "inference_3d.py",
        f"checkpoint={ckpt}",
        "model=sam2.1_hiera_t",
        "model.image_size=64",
        "dataset=nnunet",
        f"dataset.root={data_root / 'nnunet'}",
        "split=train",
        "trainer.device=cpu",
        "trainer.progress_bar=false",
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    _run([*args, f"output_dir={one}", f"hydra.run.dir={tmp_path / 'h1'}"])
    _run([*args, f"output_dir={two}", f"hydra.run.dir={tmp_path / 'h2'}"], torchrun=True)
    files = sorted(p.relative_to(one).as_posix() for p in one.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(two).as_posix() for p in two.rglob("*") if p.is_file())
    masks = [f for f in files if f.endswith(".npy")]
    assert len(masks) >= 3
    for f in masks:
        assert np.array_equal(np.load(one / f), np.load(two / f)), f
    assert (two / "metrics.csv").read_text(encoding="utf-8") == (one / "metrics.csv").read_text(
        encoding="utf-8"
    )
    log = (tmp_path / "h2" / "inference_3d.log").read_text(encoding="utf-8")
    n = len(masks)
    assert f"evaluation shard 0/2: {(n + 1) // 2} of {n} cases" in log  # each case segmented once
    assert f"evaluation shard 1/2: {n // 2} of {n} cases" in log
