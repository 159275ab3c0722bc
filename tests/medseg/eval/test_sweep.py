"""Sweep job folders (``<job.num>_<short key>``) and the sweep summary (medseg/eval/sweep.py), issue 12 (7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from medseg.eval.sweep import MAX_JOB_DIRNAME, SweepSummaryCallback, job_dirname, summarize_sweep
from medseg.eval.tables import read_csv
from tests.conftest import CLI_SMALL, run_cli

SAFE = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._=,-")


def test_job_dirname_shortens_paths_and_keys():
    name = job_dirname(
        3,
        [
            "+arm=sam2_zero_shot",  # the job's order is kept (a sweeper's parameters come first)
            "sam2_checkpoint=checkpoints/sam2.1_hiera_tiny.pt",
            "optim.lr=0.0003807947176588889",
            "dataset.root=/d",
            "hydra.sweeper.n_trials=2",
        ],
        exclude_keys=["dataset.root"],
    )
    assert name == "3_arm=sam2_zero_shot,sam2_checkpoint=sam2.1_hiera_tiny,lr=0.0003808"
    assert job_dirname(0, []) == "0"
    assert job_dirname(1, [r"model.checkpoint=C:\weights\run 7\best.pth"]) == "1_checkpoint=best"
    assert job_dirname(2, ["data.root=/data/btcv/"]) == "2_root=btcv"
    assert job_dirname(6, ["prompts_file=/p/case_01.NII.GZ", "x=/a/b.tar.gz"]) == "6_prompts_file=case_01,x=b"
    assert job_dirname(4, ["~logger"]) == "4_no-logger"
    assert (
        job_dirname(5, ["seed=7", "optim.lr=1e-4", "model=sam2.1_hiera_t"])
        == "5_seed=7,lr=0.0001,model=sam2.1_hiera_t"
    )


@pytest.mark.parametrize(
    "overrides",
    [
        [f"model.key{i}=/very/long/path/number/{i}/to/a/file_with_a_long_name_{i}.nii.gz" for i in range(12)],
        ["a=" + "x" * 300],
        [
            "dataset.augment={flip: {_target_: monai.transforms.RandFlipd, keys: [image, label]}}",
            "b='q u o t e'",
        ],
        [f"hparam_{i}={i * 0.123456789}" for i in range(40)],
    ],
    ids=["many-paths", "long-value", "unsafe-chars", "many-overrides"],
)
def test_job_dirname_is_capped_safe_and_unique(overrides):
    names = {
        job_dirname(7, overrides[:k] + [f"seed={s}"]) for k in range(1, len(overrides) + 1) for s in (1, 2)
    }
    assert len(names) == 2 * len(overrides)  # the hash keeps cut names apart
    for name in names:
        assert len(name) <= MAX_JOB_DIRNAME and name.startswith("7_") and set(name) <= SAFE, name
        assert "/" not in name and not name.endswith(("-", ","))


def _fake_run(folder: Path, model: str) -> None:
    folder.mkdir(parents=True)
    (folder / "run_summary.json").write_text(
        json.dumps({"model": model, "best": {"metric": "val/dice", "value": 0.5}}), encoding="utf-8"
    )


def test_summary_finds_nested_jobs_and_says_why_when_it_cannot(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    _fake_run(sweep / "0_a=1" / "nested", "m0")  # a job folder one level deeper than Hydra's default
    _fake_run(sweep / "1_a=2", "m1")
    rows = summarize_sweep(sweep)
    assert sorted(r["run"] for r in rows) == ["0_a=1/nested", "1_a=2"]
    assert (sweep / "sweep_summary.csv").exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    assert summarize_sweep(empty) == []
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sweep summary not written" in err[0] and str(empty) in err[0]
    assert not (empty / "sweep_summary.csv").exists()

    # jobs Hydra reported but that wrote nothing: the line names them
    cb = SweepSummaryCallback()
    for job in ("0_x", "1_y"):
        (empty / job).mkdir()
    cb.job_dirs = [empty / "0_x", empty / "1_y"]
    cb.on_multirun_end(config=_sweep_cfg(empty, compare=True))
    err = capsys.readouterr().err
    assert "none of the 2 job folders" in err and "comparison not written" in err


def _sweep_cfg(sweep_dir: Path, compare: bool):
    from omegaconf import OmegaConf

    return OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep_dir)}}, "compare_runs": compare})


def test_multirun_with_a_path_override_writes_flat_job_folders_and_a_summary(data_root, tmp_path):
    """The README's ``sam2_checkpoint=checkpoints/...pt`` nested every job one folder deeper, and the
    summary was then silently skipped; many overrides made names too long for the file system."""
    sweep = tmp_path / "sweep"
    ckpt = tmp_path / "some" / "deep" / "folder" / "checkpoints" / "sam2.1_hiera_tiny.pt"
    r = run_cli(
        "train_2d.py",
        "-m",
        f"dataset.root={data_root / 'kvasir'}",
        f"sam2_checkpoint={ckpt}",
        "optim.lr=1e-4,2e-4",
        *CLI_SMALL,
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "trainer.batch_size=1",
        "trainer.progress_bar=false",
        "logger=none",
        f"hydra.sweep.dir={sweep}",
        timeout=600,
        env={"OMP_NUM_THREADS": "1"},  # 64 px: one thread is as fast and robust to a busy CPU
    )
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = sorted(p.parent for p in sweep.rglob("run_summary.json"))
    assert len(jobs) == 2 and all(j.parent == sweep for j in jobs), jobs  # depth 1
    for num, job in enumerate(jobs):
        assert job.name.startswith(f"{num}_") and len(job.name) <= MAX_JOB_DIRNAME, job.name
        assert "sam2_checkpoint=sam2.1_hiera_tiny" in job.name, job.name
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text(encoding="utf-8"))
        assert f"sam2_checkpoint={ckpt}" in overrides  # the full overrides are kept
    rows = read_csv(sweep / "sweep_summary.csv")
    assert sorted(row["run"] for row in rows) == [j.name for j in jobs]
    assert "WARNING sweep summary" not in r.stderr
