"""2D training through the shared engine: experiments, output contract, resume, NaN guard, atomic
checkpoints, DDP, zero-shot evaluation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from medseg.eval.tables import read_csv as _rows
from tests.conftest import CLI_SMALL, ROOT, run_cli, run_entry, run_torchrun
from tests.conftest import checkpoint_weights as _weights
from tests.medseg.helpers import (
    DDP_SMALL,
    changed_keys,
    full_part_resumed,
    init_weights,
    max_abs_diff,
    untimed_rows,
)

EXPERIMENTS_2D = {
    "refuge_cup": "refuge",
    "refuge_disc_cup": "refuge",
    "kvasir_finetune": "kvasir",
    "kvasir_frozen_encoder": "kvasir",
    "flare_adrenal_decoder_only": "nnunet",
    "auto_no_prompt": "kvasir",
}


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS_2D))
def test_experiment_two_steps(experiment, data_root, tmp_path):
    extra = ["dataset.labels=[1,2]"] if experiment == "flare_adrenal_decoder_only" else []
    out = tmp_path / "run"
    cfg, _ = run_entry(
        "train_2d",
        [
            f"experiment={experiment}",
            f"dataset.root={data_root / EXPERIMENTS_2D[experiment]}",
            "model.image_size=64",
            *extra,
        ],
        out,
    )
    assert cfg.task_name == experiment
    for name in ("checkpoint_last.pth", "checkpoint_best.pth", "metrics.csv", "val_cases.csv", "splits.json"):
        assert (out / name).is_file(), name
    rows = _rows(out / "metrics.csv")
    assert len(rows) == 1 and rows[0]["step"] == "2"
    assert float(rows[0]["train/loss"]) > 0
    ck = torch.load(out / "checkpoint_last.pth", map_location="cpu", weights_only=True)
    assert ck["model_cfg"]["name"] == cfg.model.name and ck["step"] == 2
    best = torch.load(out / "checkpoint_best.pth", map_location="cpu", weights_only=True)
    assert "optimizer" not in best and best["model"].keys() == ck["model"].keys()


def test_trainable_parts_stay_frozen(data_root, tmp_path):
    out = tmp_path / "run"
    run_entry(
        "train_2d",
        [
            "experiment=kvasir_frozen_encoder",
            f"dataset.root={data_root / 'kvasir'}",
            "model.image_size=64",
            "seed=3",
        ],
        out,
    )
    changed = changed_keys(_weights(out / "checkpoint_last.pth"), init_weights(3))
    assert changed, "nothing trained"
    assert all(k.startswith("sam_mask_decoder.") for k in changed), sorted(changed)[:5]


def test_resume_is_exact(data_root, tmp_path):
    common = [
        f"dataset.root={data_root / 'kvasir'}",
        "trainer.limit_train_batches=2",
        "prompt=click",
        "optim.lr=1e-3",
        "seed=7",
    ]
    full, part, resumed = full_part_resumed("train_2d", common, tmp_path)
    a, b = _weights(full / "checkpoint_last.pth"), _weights(resumed / "checkpoint_last.pth")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    init = _weights(part / "checkpoint_last.pth")
    assert any(not torch.equal(a[k], init[k]) for k in a), "second epoch changed nothing"
    assert untimed_rows(full / "metrics.csv") == untimed_rows(resumed / "metrics.csv")
    assert (resumed / "splits.json").read_text(encoding="utf-8") == (full / "splits.json").read_text(
        encoding="utf-8"
    )
    from medseg.train.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match=r"checkpoint_best\.pth: holds weights only .*checkpoint_last"):
        run_entry("train_2d", [*common, f"trainer.resume={part / 'checkpoint_best.pth'}"], tmp_path / "r2")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(data_root, tmp_path, monkeypatch):
    from func_2d.task import SAM2ImageTask
    from medseg.train.engine import TrainingError

    calls = {"n": 0}
    orig = SAM2ImageTask.training_step

    def flaky(self, model, batch):
        calls["n"] += 1
        parts = orig(self, model, batch)
        if calls["n"] > 2:
            parts["loss"] = parts["loss"] * float("nan")
        return parts

    monkeypatch.setattr(SAM2ImageTask, "training_step", flaky)
    out = tmp_path / "run"
    with pytest.raises(TrainingError, match="non-finite loss .* last good checkpoint: .*checkpoint_last.pth"):
        run_entry("train_2d", [f"dataset.root={data_root / 'kvasir'}", "trainer.max_epochs=3"], out)
    ck = torch.load(out / "checkpoint_last.pth", map_location="cpu", weights_only=True)
    assert ck["epoch"] == 1 and all(
        torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point()
    )


def test_kill_during_checkpoint_save_leaves_previous_loadable(tmp_path):
    from medseg.train.checkpoint import atomic_torch_save

    path = tmp_path / "checkpoint_last.pth"
    atomic_torch_save({"step": 1, "w": torch.ones(10)}, path)
    code = (
        "import torch, sys\n"
        "from medseg.train.checkpoint import atomic_torch_save\n"
        "big = {'step': 2, 'w': torch.randn(40_000_000)}\n"
        "print('ready', flush=True)\n"
        "while True:\n"
        f"    atomic_torch_save(big, {str(path)!r})\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.3)  # inside a save
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    ck = torch.load(path, map_location="cpu", weights_only=True)
    assert ck["step"] in (1, 2)
    assert ck["w"].numel() in (10, 40_000_000)


def test_failed_checkpoint_write_is_one_error_and_keeps_previous(tmp_path, monkeypatch):
    """A full disk inside torch.save: one error naming the file and the free space; the old file stays."""
    from medseg.train import checkpoint as runtime

    path = tmp_path / "checkpoint_last.pth"
    runtime.atomic_torch_save({"step": 1}, path)

    def full_disk(obj, f):
        f.write(b"partial")
        raise RuntimeError(
            "[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file"
        )

    monkeypatch.setattr(runtime.torch, "save", full_disk)
    with pytest.raises(OSError, match=r"checkpoint_last\.pth: could not write .*GiB free.*untouched"):
        runtime.atomic_torch_save({"step": 2}, path)
    assert torch.load(path, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_last.pth"]  # no temporary file left


def test_zero_shot_evaluation_writes_metrics(data_root, tmp_path):
    from sam2_train import build_sam2_model

    ckpt = tmp_path / "meta.pt"
    torch.save({"model": build_sam2_model("sam2.1_hiera_t", image_size=64).state_dict()}, ckpt)
    out = tmp_path / "eval"
    run_entry(
        "train_2d",
        [f"dataset.root={data_root / 'kvasir'}", "train=false", f"model.checkpoint={ckpt}", "vis=true"],
        out,
    )
    rows = _rows(out / "metrics.csv")
    assert len(rows) == 1 and rows[0]["val/dice"] != ""
    assert not (out / "checkpoint_last.pth").exists()
    cases = _rows(out / "val_cases.csv")
    assert cases and {"case_id", "class_name", "dice", "iou", "hd95", "status"} <= set(cases[0])
    assert list((out / "vis").rglob("*.png"))
    # scored on the original image grid, not on the 64 px model input
    from medseg.data.datasets import KvasirDataset

    ds = KvasirDataset(data_root / "kvasir")
    for row in cases:
        label = ds.load_case(row["case_id"])["label"]
        assert label.shape[-2:] != (64, 64)  # synthetic Kvasir images are 72 px high, of varying width
        assert int(row["target_voxels"]) == int((label == int(row["class_id"])).sum())


def test_cli_wrong_variant_checkpoint_is_one_line(data_root, tmp_path):
    from sam2_train import build_sam2_model

    ckpt = tmp_path / "tiny.pt"
    torch.save({"model": build_sam2_model("sam2.1_hiera_t", image_size=64).state_dict()}, ckpt)
    out = tmp_path / "run"
    r = run_cli(
        "train_2d.py",
        "model=sam2.1_hiera_s",
        f"model.checkpoint={ckpt}",
        f"dataset.root={data_root / 'kvasir'}",
        "model.image_size=64",
        "trainer.device=cpu",
        f"hydra.run.dir={out}",
        timeout=300,
    )
    assert r.returncode != 0
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 1, r.stderr
    assert str(ckpt) in err[0] and "sam2.1_hiera_t" in err[0] and "sam2.1_hiera_s" in err[0]
    assert not (out / "checkpoint_last.pth").exists() and not (out / "splits.json").exists()


def test_cli_output_contract(data_root, tmp_path):
    out = tmp_path / "run"
    r = run_cli(
        "train_2d.py",
        "experiment=kvasir_finetune",
        "dataset=kvasir",
        f"dataset.root={data_root / 'kvasir'}",
        "model=sam2.1_hiera_t",
        *CLI_SMALL,
        "prompt=box",
        "trainer.max_epochs=1",
        "trainer.batch_size=2",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=2",
        "trainer.val_freq=1",
        "vis=true",
        f"hydra.run.dir={out}",
        timeout=400,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    for name in (
        "checkpoint_last.pth",
        "checkpoint_best.pth",
        "metrics.csv",
        "val_cases.csv",
        "splits.json",
        ".hydra/config.yaml",
        "run_summary.json",
    ):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert list((out / "vis").rglob("*.png"))
    assert "outputs in" in r.stdout


@pytest.mark.slow
def test_overfit_four_images(tmp_path):
    """On 4 synthetic images, Dice rises from < 0.3 to > 0.8 within 40 steps (scored on the training split)."""
    from medseg.data import synthetic

    root = synthetic.write_kvasir(tmp_path / "kv4", n=4, size=64)
    ids = ",".join(p.stem for p in sorted((root / "images").glob("*.jpg")))
    out = tmp_path / "run"
    run_entry(
        "train_2d",
        [
            f"dataset.root={root}",
            f"dataset.split.train=[{ids}]",
            "eval_split=train",
            "prompt.jitter_px=0",
            "prompt.jitter_frac=0",
            "optim.lr=3e-4",
            "scheduler=constant",
            "trainer.max_epochs=20",
            "trainer.val_freq=5",
            "trainer.limit_train_batches=2",
            "trainer.limit_val_batches=4",
            "trainer.val_before_training=true",
        ],
        out,
    )
    dice = [float(r["val/dice"]) for r in _rows(out / "metrics.csv") if r.get("val/dice")]
    assert dice[0] < 0.3, dice
    assert max(dice) > 0.8, dice


@pytest.mark.slow  # 27 s; test_distributed.py's DDP equality tests and the 3D torchrun test stay in make test
def test_ddp_two_processes_match_one_process(data_root, tmp_path):
    """2 gloo processes with batch 1 each == 1 process with batch 2 (SGD, so float summation-order noise is
    not amplified by Adam's normalisation; tolerance 1e-5 absolute on every weight)."""
    common = ["train_2d.py", f"dataset.root={data_root / 'kvasir'}", *DDP_SMALL]
    one, two = tmp_path / "one", tmp_path / "two"
    env = {"OMP_NUM_THREADS": "1"}
    r1 = run_cli(*common, "trainer.batch_size=2", f"hydra.run.dir={one}", timeout=400, env=env)
    assert r1.returncode == 0, r1.stderr[-3000:]
    r2 = run_torchrun(*common, "trainer.batch_size=1", f"hydra.run.dir={two}", timeout=600, env=env)
    assert r2.returncode == 0, r2.stderr[-3000:]
    a, b = _weights(one / "checkpoint_last.pth"), _weights(two / "checkpoint_last.pth")
    diff = max_abs_diff(a, b)
    assert diff < 1e-5, diff
    moved = max_abs_diff(a, init_weights(5))
    assert moved > 100 * 1e-5, "training did not move the weights: the comparison would be empty"


def test_monai_augmentation_is_seeded(data_root, tmp_path):
    """Augmentations come from MONAI dict transforms in config and are a function of (seed, epoch, index)."""
    aug = (
        "dataset.augment={flip: {_target_: monai.transforms.RandFlipd, keys: [image, label], prob: 0.5, "
        "spatial_axis: 1}, noise: {_target_: monai.transforms.RandGaussianNoised, keys: [image], prob: 1.0, std: 0.05}}"
    )
    common = [f"dataset.root={data_root / 'kvasir'}", aug, "seed=11", "optim.lr=1e-3"]
    run_entry("train_2d", common, tmp_path / "a")
    run_entry("train_2d", common, tmp_path / "b")
    run_entry("train_2d", [*common[:2], "seed=12", "optim.lr=1e-3"], tmp_path / "c")
    a, b, c = (_weights(tmp_path / x / "checkpoint_last.pth") for x in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
