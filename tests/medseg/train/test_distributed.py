"""Cluster scale: the process group from torchrun / SLURM / submitit, DistributedDataParallel in the
engine, mid-epoch checkpoints and a clean stop on SIGTERM / SIGUSR1 / Ctrl-C with an exact resume."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
import torch

from medseg.eval.tables import read_csv
from medseg.train.distributed import export_cluster_env, first_host
from medseg.train.preemption import RunInterrupted
from tests.conftest import checkpoint_weights, compose_cfg, free_port
from tests.ddp_toy import ROOT, ToyTask, run_toy, spawn_worker
from tests.medseg.helpers import max_abs_diff, untimed_rows


def _spawn(out, world=2, trainer=None, kill_rank=None, kill_at=None):
    torch.multiprocessing.spawn(
        spawn_worker,
        args=(world, free_port(), str(out), trainer or {}, kill_rank, kill_at),
        nprocs=world,
        join=True,
    )


# ---------------------------------------------------------------------- environment
@pytest.mark.parametrize(
    "nodelist, host",
    [("gpu[03-05,9],cpu1", "gpu03"), ("node7", "node7"), ("a-b[1,4]", "a-b1"), ("n[010-011]", "n010")],
)
def test_first_host_of_slurm_nodelist(nodelist, host):
    assert first_host(nodelist) == host


def test_srun_environment_becomes_torchrun_variables():
    env = {
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
        "SLURM_NTASKS": "8",
        "SLURM_JOB_NODELIST": "gpu[12-15]",
        "SLURM_JOB_ID": "123456",
    }
    assert export_cluster_env(env) == "slurm"
    assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"], env["MASTER_ADDR"]) == ("5", "1", "8", "gpu12")
    assert env["MASTER_PORT"] == str(20000 + 123456 % 20000)
    torchrun = {"RANK": "1", "WORLD_SIZE": "2", "SLURM_PROCID": "0", "SLURM_NTASKS": "4"}
    assert export_cluster_env(torchrun) == "torchrun" and torchrun["RANK"] == "1"  # torchrun's own wins
    assert export_cluster_env({"SLURM_PROCID": "0", "SLURM_NTASKS": "1"}) == "single"


def test_rank_zero_guards_the_run_folder_under_every_launcher(tmp_path, monkeypatch):
    """Only rank 0 checks and locks the run folder, also under submitit / srun (where RANK is not set yet);
    ``trainer.resume=auto`` continues a folder with results; a SLURM job requeued onto another host takes
    over the lock its earlier start left (same job id), another job's lock stays live."""
    from medseg.run.rundir import _is_main_process
    from medseg.train.distributed import launcher_rank
    from medseg.train.run_folder import check_run_folder, lock_is_live

    for key in ("RANK", "SUBMITIT_LOCAL_GLOBALID", "SLURM_PROCID", "SLURM_JOB_ID"):
        monkeypatch.delenv(key, raising=False)
    assert launcher_rank() == 0 and _is_main_process()
    monkeypatch.setenv("SUBMITIT_LOCAL_GLOBALID", "1")
    assert launcher_rank() == 1 and not _is_main_process()
    monkeypatch.delenv("SUBMITIT_LOCAL_GLOBALID")
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert not _is_main_process()
    monkeypatch.setenv("RANK", "0")  # torchrun's own variable wins
    assert _is_main_process()
    (tmp_path / "metrics.csv").write_text("epoch\n1\n", encoding="utf-8")
    (tmp_path / "checkpoint_last.pth").write_bytes(b"")  # auto continues the folder's checkpoint_last.pth
    assert check_run_folder(tmp_path, resume="auto") == "resume"
    with pytest.raises(FileExistsError, match="holds an earlier run"):
        check_run_folder(tmp_path, resume=None)
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert not lock_is_live({"pid": 1, "host": "node-that-was-preempted", "slurm_job": "42"})
    assert lock_is_live({"pid": 1, "host": "node-that-was-preempted", "slurm_job": "41"})


def test_train_slurm_script_submits_n_gpus_m_nodes_and_runs_srun(tmp_path):
    """By hand it submits itself with the allocation asked for; inside the job it starts one process per
    GPU with srun, resuming in place (stand-in sbatch/srun/scontrol on PATH print their arguments)."""
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in ("sbatch", "srun"):
        (fake / tool).write_text(f'#!/bin/sh\necho "{tool} $*"\n', encoding="utf-8")
        (fake / tool).chmod(0o755)
    # the second host comes after the reader may have closed the pipe (a long node list on a real
    # cluster): `head -n 1 || echo localhost` under pipefail made the address "gpu07\nlocalhost"
    (fake / "scontrol").write_text("#!/bin/sh\necho gpu07\nsleep 0.3\necho gpu08\n", encoding="utf-8")
    (fake / "scontrol").chmod(0o755)
    (ROOT / ".venv" / "bin").exists() or pytest.skip("train_slurm.sh runs the repository's .venv")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env["PATH"] = f"{fake}{os.pathsep}{env['PATH']}"

    def sh(*args, **extra):
        return subprocess.run(
            ["bash", "train_slurm.sh", *args], cwd=ROOT, capture_output=True, text=True, env={**env, **extra}
        )

    r = sh("--gpus", "4", "--nodes", "2", "sam2.1_t", "trainer.max_epochs=3")
    assert r.returncode == 0, r.stderr
    assert "sbatch --nodes=2 --ntasks-per-node=4 --gres=gpu:4 " in r.stdout
    assert r.stdout.rstrip().endswith("--gpus 4 --nodes 2 sam2.1_t trainer.max_epochs=3")
    inside = dict(
        SLURM_JOB_ID="77",
        SLURM_JOB_NUM_NODES="2",
        SLURM_NTASKS_PER_NODE="4(x2)",
        SLURM_JOB_NODELIST="gpu[07-08]",
    )
    r = sh("--gpus", "4", "--nodes", "2", "sam2.1_t", "trainer.max_epochs=3", **inside)
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip().splitlines()[-1]
    assert line.startswith("srun ") and "train_2d.py model=sam2.1_hiera_t" in line
    assert "hydra.run.dir=outputs/slurm/77_sam2.1_t trainer.resume=auto trainer.max_epochs=3" in line
    assert "master gpu07:20077" in r.stdout and "localhost" not in r.stdout
    r = sh("--gpus", "8", "sam2.1_t", **inside)  # the allocation does not match what was asked
    assert r.returncode == 2 and "allocation has 2 node(s) x 4 task(s)" in r.stderr


# ---------------------------------------------------------------------- DDP in the engine
def test_ddp_two_processes_equal_one_process_with_accumulation(tmp_path):
    """2 gloo processes x batch 1 == 1 process x batch 2 (SGD, 2 epochs of 4 steps, accumulation over 2
    batches so no_sync is used; fp32, tolerance 1e-6). The model is a DistributedDataParallel instance;
    its trainable but unused parameter makes ``find_unused_parameters=auto`` pick true."""
    trainer = {"limit_train_batches": 8, "accumulate_grad_batches": 2, "max_epochs": 2}
    one = run_toy(tmp_path / "one", **trainer)
    assert type(one.train_model).__name__ == "TrainStep"  # no process group: no wrapper
    _spawn(tmp_path / "two", trainer={**trainer, "batch_size": 1})
    probe = torch.load(tmp_path / "two" / "probe.pt", weights_only=True)
    assert probe == {"ddp": True, "find_unused": True}
    a, b = (
        checkpoint_weights(tmp_path / "one" / "checkpoint_last.pth"),
        checkpoint_weights(tmp_path / "two" / "checkpoint_last.pth"),
    )
    init = run_toy(tmp_path / "init", max_epochs=0).model.state_dict()
    assert max_abs_diff(a, init) > 1e-3, "training did not move the weights: the comparison would be empty"
    assert max_abs_diff(a, b) <= 1e-6
    assert torch.equal(a["unused.weight"], init["unused.weight"])


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="the nccl DDP step needs 2 CUDA devices")
def test_ddp_step_with_nccl_on_two_gpus_equals_one_process(tmp_path):
    """The same comparison on 2 GPUs with the nccl backend (tolerance 1e-5: CUDA reductions); deselected
    without CUDA (tests/conftest.py), skipped with one GPU."""
    trainer = {"limit_train_batches": 8, "accumulate_grad_batches": 2, "max_epochs": 2}
    run_toy(tmp_path / "one", device=torch.device("cuda:0"), **trainer)
    args = (2, free_port(), str(tmp_path / "two"), {**trainer, "batch_size": 1}, None, None, True)
    torch.multiprocessing.spawn(spawn_worker, args=args, nprocs=2, join=True)
    assert torch.load(tmp_path / "two" / "probe.pt", weights_only=True)["ddp"]
    a, b = (checkpoint_weights(tmp_path / d / "checkpoint_last.pth") for d in ("one", "two"))
    assert max_abs_diff(a, b) <= 1e-5


def test_unused_parameter_probe_names_them_and_leaves_no_trace():
    """find_unused_parameters=auto's probe names the trainable parameters the step never reaches (not the
    frozen ones) and leaves the RNG, BatchNorm statistics and the task's state as they were."""
    from medseg.train.distributed import TrainStep, unused_trainable

    net = torch.nn.ModuleDict(
        {"conv": torch.nn.Conv2d(1, 2, 3), "bn": torch.nn.BatchNorm2d(2), "unused": torch.nn.Linear(2, 1)}
    )
    net["frozen"] = torch.nn.Linear(2, 1).requires_grad_(False)

    class Task:
        calls = 0

        def training_step(self, model, batch):
            self.calls += 1
            noise = torch.rand(1)  # the step draws random numbers
            return {"loss": (model["bn"](model["conv"](batch)) * noise).mean()}

        def state_dict(self):
            return {"calls": self.calls}

        def load_state_dict(self, state):
            self.calls = state["calls"]

    task, batch = Task(), torch.randn(2, 1, 6, 6)
    mean, rng = net["bn"].running_mean.clone(), torch.get_rng_state()
    names = unused_trainable(TrainStep(net, task), batch, torch.device("cpu"))
    assert names == ["unused.weight", "unused.bias"]
    assert torch.equal(net["bn"].running_mean, mean) and int(net["bn"].num_batches_tracked) == 0
    assert torch.equal(torch.get_rng_state(), rng) and task.calls == 0


def test_sigterm_on_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    """SLURM may signal one task first: both processes stop after step 3, one checkpoint at batch 3."""
    _spawn(tmp_path / "run", trainer={"limit_train_batches": 8, "batch_size": 1}, kill_rank=1, kill_at=3)
    for r in (0, 1):
        assert torch.load(tmp_path / "run" / f"rank{r}.pt", weights_only=True)["stopped"] == signal.SIGTERM
    ck = torch.load(tmp_path / "run" / "checkpoint_last.pth", weights_only=True)
    assert (ck["epoch"], ck["batch_in_epoch"], ck["step"]) == (0, 3, 3)


# ---------------------------------------------------------------------- pre-emption and resume
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
@pytest.mark.parametrize("kill_step", [3, 11])
def test_signal_mid_epoch_then_resume_in_place_is_exact(sig, kill_step, tmp_path, capsys):
    """2 epochs of 8 steps; the signal arrives during step ``kill_step`` (3: epoch 1; 11: epoch 2 after
    epoch 1's rows were written). checkpoint_last.pth is written after that step, one line says how to
    resume; ``trainer.resume=auto`` in the same folder ends with the uninterrupted run's weights (max abs
    diff <= 1e-6) and appends to metrics.csv / val_cases.csv: no row twice, none lost."""
    trainer = {"limit_train_batches": 8, "max_epochs": 2, "batch_size": 2}
    full = run_toy(tmp_path / "full", **trainer)
    run = tmp_path / "run"
    with pytest.raises(RunInterrupted) as e:
        run_toy(run, ToyTask(kill_at=(kill_step, sig)), **trainer)
    assert e.value.signum == sig
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(
        f"stopped by {signal.Signals(sig).name} after step {kill_step} "
    )
    assert f"trainer.resume={run / 'checkpoint_last.pth'}" in err[0]
    ck = torch.load(run / "checkpoint_last.pth", weights_only=True)
    assert (ck["epoch"], ck["batch_in_epoch"], ck["step"]) == divmod(kill_step, 8) + (kill_step,)
    before = read_csv(run / "metrics.csv") if kill_step > 8 else []
    assert len(before) == kill_step // 8
    resumed = run_toy(run, resume="auto", **trainer)
    assert resumed.step == 16
    assert (
        max_abs_diff(
            checkpoint_weights(full.out_dir / "checkpoint_last.pth"),
            checkpoint_weights(run / "checkpoint_last.pth"),
        )
        <= 1e-6
    )
    assert untimed_rows(run / "metrics.csv") == untimed_rows(full.out_dir / "metrics.csv")
    assert read_csv(run / "metrics.csv")[: len(before)] == before  # earlier rows kept as written
    assert untimed_rows(run / "val_cases.csv") == untimed_rows(full.out_dir / "val_cases.csv")


def test_save_every_n_steps_writes_the_position_in_the_epoch(tmp_path):
    """A kill without warning (SIGKILL) loses at most N steps: checkpoint_last.pth after step 4 of 8 holds
    batch 4 of epoch 0; resuming from it in a new folder ends with the uninterrupted weights."""

    class Killed(Exception):
        pass

    class DiesAtStep7(ToyTask):
        def training_step(self, model, batch):
            out = super().training_step(model, batch)
            if self.calls == 7:
                raise Killed
            return out

    trainer = {"limit_train_batches": 8, "batch_size": 2, "save_every_n_steps": 4}
    with pytest.raises(Killed):
        run_toy(tmp_path / "part", DiesAtStep7(), **trainer)
    ck = torch.load(tmp_path / "part" / "checkpoint_last.pth", weights_only=True)
    assert (ck["epoch"], ck["batch_in_epoch"], ck["step"]) == (0, 4, 4)
    full = run_toy(tmp_path / "full", **trainer)
    res = run_toy(tmp_path / "res", resume=str(tmp_path / "part" / "checkpoint_last.pth"), **trainer)
    assert max_abs_diff(full.model.state_dict(), res.model.state_dict()) <= 1e-6
    assert untimed_rows(tmp_path / "full" / "metrics.csv") == untimed_rows(tmp_path / "res" / "metrics.csv")


def test_submitit_requeue_protocol_is_called_after_the_checkpoint(tmp_path, monkeypatch):
    """Under submitit its pre-emption signal (USR2) is chained to submitit's own handler (which calls the
    launcher's checkpoint() and requeues) once checkpoint_last.pth holds the current step."""
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    seen = []

    def submitit_handler(signum, frame):
        ck = torch.load(tmp_path / "run" / "checkpoint_last.pth", weights_only=True)
        seen.append((signum, ck["step"]))
        raise SystemExit(-1)  # what submitit does after requeueing

    previous = signal.signal(signal.SIGUSR2, submitit_handler)
    try:
        with pytest.raises(SystemExit):
            run_toy(tmp_path / "run", ToyTask(kill_at=(2, signal.SIGUSR2)), limit_train_batches=8)
        assert signal.getsignal(signal.SIGUSR2) is submitit_handler  # restored
    finally:
        signal.signal(signal.SIGUSR2, previous)
    assert seen == [(signal.SIGUSR2, 2)]


@pytest.mark.parametrize(
    "key, value",
    [
        ("trainer.save_every_n_steps", 0),
        ("trainer.ddp.find_unused_parameters", "yes"),
        ("trainer.ddp.bucket_cap_mb", -1.5),
    ],
)
def test_bad_distributed_options_are_one_clear_error(key, value, tmp_path):
    from medseg.run.config_check import validate_config

    cfg = compose_cfg("train_2d", [f"{key}={value}"], tmp_path)
    with pytest.raises(ValueError, match=rf"^{key}: expected .* got {value!r}$"):
        validate_config(cfg)


# ---------------------------------------------------------------------- sharded evaluation
def test_evaluation_sharded_over_two_processes_gives_the_single_process_rows(tmp_path):
    """run_evaluation with shard=(rank, 2): rank 0 scores cases 0, 2, 4, 6, rank 1 cases 1, 3, 5 (5 is
    skipped, as a case without prompts is); rank 0 receives every row in the single-process order and
    the same summary, rank 1 nothing to write."""
    from tests.ddp_toy import eval_worker, evaluate_toy

    summary1, rows1, _ = evaluate_toy()
    assert len(rows1) >= 10 and len({r["case_id"] for r in rows1}) == 6
    torch.multiprocessing.spawn(eval_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "eval0.pt", weights_only=False)
    r1 = torch.load(tmp_path / "eval1.pt", weights_only=False)
    assert repr(r0["rows"]) == repr(rows1)  # repr: NaN (HD95 of an empty mask) equals itself
    assert repr(r0["summary"]) == repr(summary1)
    assert r1 == {"summary": {}, "rows": []}


def test_a_submitit_job_replaces_a_master_port_inherited_from_the_shell(monkeypatch):
    """A login profile (or an enclosing job) exporting MASTER_PORT / MASTER_ADDR made submitit's export
    raise, a traceback in every task of launcher=submitit_local / slurm. Now the job's rank, size and
    first host win; the port given in the environment is kept (submitit's rule: the same in every task)."""
    import os

    for key, value in {
        "SUBMITIT_EXECUTOR": "local", "SUBMITIT_LOCAL_JOB_ID": "77", "SUBMITIT_LOCAL_NTASKS": "2",
        "SUBMITIT_LOCAL_JOB_NUM_NODES": "1", "SUBMITIT_LOCAL_NODEID": "0", "SUBMITIT_LOCAL_GLOBALID": "1",
        "SUBMITIT_LOCAL_LOCALID": "1", "MASTER_PORT": "1234", "MASTER_ADDR": "elsewhere",
    }.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.setenv(key, "x")  # recorded by monkeypatch, so what the export writes is undone after
        monkeypatch.delenv(key)
    assert export_cluster_env() == "submitit"
    assert os.environ["RANK"] == "1" and os.environ["WORLD_SIZE"] == "2" and os.environ["LOCAL_RANK"] == "1"
    assert os.environ["MASTER_PORT"] == "1234" and os.environ["MASTER_ADDR"] != "elsewhere"
