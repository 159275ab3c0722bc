"""experiment=all_families_kvasir (issue 23): every model family on one Kvasir-SEG split, one comparison."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from tests.conftest import compose_cfg, run_cli

# arm -> (model.name, what distinguishes it)
ARMS = {
    "sam2_finetuned": ("sam2.1_hiera_t", {"model.trainable": "frozen_prompt_encoder", "train": True}),
    "sam_finetuned": ("sam_vit_b", {"model.trainable": "frozen_prompt_encoder", "train": True}),
    "medsam_finetuned": ("medsam_vit_b", {"model.trainable": "frozen_prompt_encoder", "train": True}),
    "resnet_box_prompt": ("resnet_box_prompt", {"model.net.encoder_weights": None}),
    "unet": ("unet", {}),
    "yolo_seg": ("yolo_seg", {"model.net.yolo_cfg": "yolo11l-seg.yaml"}),
}
SHARED = {
    "dataset.name": "kvasir",
    "dataset.split.use_native": False,
    "dataset.split.ratios": [0.8, 0.1, 0.1],
    "dataset.split.seed": 42,
    "prompt.type": "box",
    "model.image_size": 1024,
    "trainer.batch_size": 4,
    "trainer.max_epochs": 20,
    "optim.lr": 1e-4,
    "loss._target_": "medseg.train.losses.DiceBCELoss",
    "test_after_training": True,
    "task_name": "all_families_kvasir",
}


def _get(cfg, key):
    v = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(v) if OmegaConf.is_config(v) else v


def test_all_families_composes_every_arm_on_one_split(tmp_path):
    cfg = compose_cfg("train_2d", ["experiment=all_families_kvasir"], tmp_path)
    ((key, value),) = cfg.hydra.sweeper.params.items()
    assert key == "+arm" and [v.strip() for v in value.split(",")] == list(ARMS)
    assert str(cfg.hydra.mode).endswith("MULTIRUN") and cfg.compare_runs is True
    for arm, (name, own) in ARMS.items():
        c = compose_cfg("train_2d", ["experiment=all_families_kvasir", f"+arm={arm}"], tmp_path)
        assert c.model.name == name, arm
        for k, v in {**SHARED, **own}.items():
            assert _get(c, k) == v, (arm, k)


@pytest.mark.slow
def test_all_families_run_and_write_one_comparison(data_root, tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli(
        "train_2d.py", "experiment=all_families_kvasir", f"dataset.root={data_root / 'kvasir'}",
        "model.image_size=64", "model.checkpoint=null", "sam2_checkpoint=null", "yolo_cfg=yolo11n-seg.yaml",
        "trainer.device=cpu", "trainer.num_workers=0", "trainer.amp=false", "trainer.max_epochs=1",
        "trainer.limit_train_batches=1", "trainer.limit_val_batches=2", "trainer.batch_size=2",
        "trainer.progress_bar=false", "logger.log_images=false", "vis=false", "dataset.split.ratios=[0.5,0.25,0.25]",
        f"hydra.sweep.dir={sweep}", timeout=1800,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if (p / "run_summary.json").is_file())
    assert len(jobs) == len(ARMS)
    assert len({(j / "splits.json").read_text(encoding="utf-8") for j in jobs}) == 1  # identical splits
    assert {json.loads((j / "run_summary.json").read_text(encoding="utf-8"))["model"] for j in jobs} == {
        name for name, _ in ARMS.values()
    }
    for job in jobs:  # the split's test part is scored once after training, YOLO's own loop included
        assert (job / "test_metrics.csv").is_file() and (job / "test_cases.csv").is_file(), job
    table = (sweep / "comparison" / "comparison.md").read_text(encoding="utf-8")
    assert all(arm in table for arm in ARMS), table[:2000]
    assert (sweep / "comparison" / "comparison_dice.png").is_file()
