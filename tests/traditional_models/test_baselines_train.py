"""Each baseline trains 2 steps through train_2d's code path and writes the same outputs as a SAM2 run."""

from __future__ import annotations

import json

import pytest
import torch

from tests.conftest import run_cli, run_entry

OUTPUTS = ("checkpoint_last.pth", "checkpoint_best.pth", "metrics.csv", "val_cases.csv", "splits.json")


@pytest.mark.parametrize("model", ["resnet_box_prompt", "resnet50_frozen_decoder", "unet"])
def test_cnn_baseline_two_steps(model, data_root, tmp_path):
    out = tmp_path / model
    run_entry("train_2d", [f"model={model}", f"dataset.root={data_root / 'kvasir'}", "loss=dice_bce"], out)
    for name in OUTPUTS:
        assert (out / name).is_file(), name
    ck = torch.load(out / "checkpoint_last.pth", map_location="cpu", weights_only=True)
    assert ck["step"] == 2 and ck["model_cfg"]["name"] == model
    info = json.loads((out / "run_summary.json").read_text(encoding="utf-8"))
    assert info["params"] > 0 and info["model"] == model


def test_resnet50_encoder_weights_missing_is_clear(data_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="no_such_weights.pth"):
        run_entry(
            "train_2d",
            [
                "model=resnet50_frozen_decoder",
                f"dataset.root={data_root / 'kvasir'}",
                f"model.net.encoder_weights={tmp_path / 'no_such_weights.pth'}",
            ],
            tmp_path / "r",
        )


def test_yolo_baseline_trains_and_is_scored_by_our_metrics(data_root, tmp_path):
    out = tmp_path / "yolo"
    run_entry(
        "train_2d",
        ["model=yolo_seg", "model.net.yolo_cfg=yolo11n-seg.yaml", f"dataset.root={data_root / 'kvasir'}"],
        out,
    )
    for name in (*OUTPUTS, "yolo_best.pt"):
        assert (out / name).is_file(), name
    assert (out / "yolo_dataset" / "data.yaml").is_file()
    rows = (out / "val_cases.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0].startswith("epoch,case_id") and len(rows) > 1
    # the external-trainer strategy: the same checkpoint format, tables and records as every family
    from medseg.eval.tables import read_csv
    from medseg.train.checkpoint import CKPT_FORMAT, CheckpointError, read_training_checkpoint

    ck = torch.load(out / "checkpoint_last.pth", map_location="cpu", weights_only=True)
    assert (
        ck["format"] == CKPT_FORMAT
        and ck["optimizer"] is None
        and ck["task"] == {"yolo_weights": "yolo_best.pt"}
    )
    for key in ("splits", "dataset", "config", "eval_protocol", "model_cfg", "history", "best"):
        assert ck.get(key), key
    assert ck["model_cfg"]["name"] == "yolo_seg" and ck["best"]["value"] is not None
    metrics = read_csv(out / "metrics.csv")
    assert metrics[-1]["val/dice"] != "" and any(k.startswith("train/") for k in metrics[-1])
    info = json.loads((out / "run_summary.json").read_text(encoding="utf-8"))
    assert info["model"] == "yolo_seg" and info["eval_protocol"]["id"]
    with pytest.raises(CheckpointError, match="library's own loop"):
        read_training_checkpoint(out / "checkpoint_last.pth")
    # our checkpoint of the run evaluates (train=false): the family finds yolo_best.pt beside it
    again = tmp_path / "eval"
    run_entry(
        "train_2d",
        ["model=yolo_seg", f"model.checkpoint={out / 'checkpoint_best.pth'}", f"dataset.root={data_root / 'kvasir'}",
         "train=false"],
        again,
    )  # fmt: skip
    assert read_csv(again / "metrics.csv")[0]["val/dice"] != ""


@pytest.mark.slow  # 19 s; each baseline's own train test stays in make test
def test_kvasir_baselines_multirun_ends_with_a_comparison(tmp_path):
    """experiment=kvasir_baselines: five arms on one split as a Hydra multirun, then tools/compare.py."""
    import csv

    from medseg.data import synthetic

    root = synthetic.write_kvasir(tmp_path / "kv", n=10, size=64)
    sweep = tmp_path / "sweep"
    r = run_cli(
        "train_2d.py", "-m", "experiment=kvasir_baselines", f"dataset.root={root}",
        "model.image_size=64", "sam2_checkpoint=null", "trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=2",
        "trainer.batch_size=2", "trainer.device=cpu", "trainer.num_workers=0", "trainer.progress_bar=false",
        "yolo_cfg=yolo11n-seg.yaml", f"hydra.sweep.dir={sweep}", timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    with open(sweep / "comparison" / "comparison.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    labels = sorted(row["run"] for row in rows)
    assert labels == sorted(
        ["sam2_zero_shot", "sam2_finetuned", "resnet_box_prompt", "resnet50_frozen_decoder", "yolo_seg"]
    )
    splits = {
        (p / "splits.json").read_text(encoding="utf-8")
        for p in sweep.iterdir()
        if (p / "splits.json").exists()
    }
    assert len(splits) == 1, "the arms used different splits"
    assert (sweep / "comparison" / "comparison_dice.png").exists() and (sweep / "sweep_summary.csv").exists()
