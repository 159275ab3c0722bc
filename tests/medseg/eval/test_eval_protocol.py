"""Issue 12: one evaluation protocol (seed-independent prompts), the weights the user named (or a loud
refusal), automatic mode without ground-truth leaks. Each test fails on the code before the fix."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medseg.eval.tables import read_csv
from tests.conftest import SMALL, compose_cfg, run_entry

SMALL_NO_CKPT = [o for o in SMALL if not o.startswith(("model.checkpoint=", "sam2_checkpoint="))]


@pytest.fixture(scope="module")
def random_t64(tmp_path_factory):
    """A Meta-format file ({"model": state_dict}) of a random SAM2.1-T, and a checkpoint folder holding it
    under Meta's file name (what ``model.checkpoint=auto`` looks for)."""
    from sam2_train import build_sam2_model

    d = tmp_path_factory.mktemp("ckpts")
    torch.manual_seed(0)
    path = d / "sam2.1_hiera_tiny.pt"
    torch.save({"model": build_sam2_model("sam2.1_hiera_t", image_size=64).state_dict()}, path)
    return path


# ---------------------------------------------------------------------- protocol
@pytest.mark.parametrize("prompt", ["box", "click"])
def test_evaluation_does_not_depend_on_the_seed(prompt, data_root, random_t64, tmp_path):
    """Defect 1: validation boxes were jittered from the run's seed (5 px + 10 %)."""
    extra = ["prompt.n_pos=2", "prompt.n_neg=1"] if prompt == "click" else []
    tables = []
    for seed in (1, 2):
        out = tmp_path / f"seed{seed}"
        run_entry(
            "train_2d",
            [
                "train=false",
                f"prompt={prompt}",
                *extra,
                f"seed={seed}",
                f"model.checkpoint={random_t64}",
                f"dataset.root={data_root / 'kvasir'}",
                "trainer.limit_val_batches=null",
            ],
            out,
        )
        tables.append((out / "val_cases.csv").read_text(encoding="utf-8"))
    assert tables[0] == tables[1]
    rows = read_csv(tmp_path / "seed1" / "val_cases.csv")
    assert rows and all(r["eval_protocol"].startswith(prompt) for r in rows)
    summary = json.loads((tmp_path / "seed1" / "run_summary.json").read_text(encoding="utf-8"))
    assert (
        summary["eval_protocol"]["jitter_px"] == 0
        and summary["eval_protocol"]["id"] == rows[0]["eval_protocol"]
    )
    assert read_csv(tmp_path / "seed1" / "metrics.csv")[0]["eval_protocol"] == rows[0]["eval_protocol"]


def test_eval_boxes_are_tight_and_training_boxes_jitter(data_root, tmp_path):
    from medseg.eval.evaluation import EvalProtocol, eval_batch_2d

    cfg = compose_cfg("train_2d", [*SMALL, f"dataset.root={data_root / 'kvasir'}"], tmp_path)
    from medseg.run.context import prepare_data

    ctx = prepare_data(cfg, tmp_path, mode="2d")
    s = ctx.val_samples.get(0)
    lab = np.asarray(s["label"]).reshape(s["image"].shape[-2:])
    ys, xs = np.nonzero(lab == 1)
    batch = eval_batch_2d(s, EvalProtocol.from_cfg(cfg))
    assert batch.boxes[0].tolist() == [xs.min(), ys.min(), xs.max(), ys.max()]
    trained = ctx.collate([s])  # training prompts keep their jitter
    assert not torch.equal(trained.boxes, batch.boxes)
    robust = EvalProtocol.from_cfg(compose_cfg("train_2d", [*SMALL, "eval_prompt.jitter_px=4"], tmp_path))
    b1, b2 = eval_batch_2d(s, robust).boxes, eval_batch_2d(s, robust).boxes
    assert torch.equal(b1, b2) and not torch.equal(b1, batch.boxes)  # seeded, fixed jitter when asked


# ---------------------------------------------------------------------- weights
def test_auto_checkpoint_missing_names_file_and_download_command(data_root, tmp_path):
    """Defect 2: model.checkpoint defaulted to null (random) without a word."""
    with pytest.raises(FileNotFoundError) as e:
        run_entry(
            "train_2d",
            [
                *SMALL_NO_CKPT,
                f"dataset.root={data_root / 'kvasir'}",
                f"paths.checkpoint_dir={tmp_path / 'none'}",
            ],
            tmp_path / "run",
            small=False,
        )
    msg = str(e.value)
    assert (
        "sam2.1_hiera_tiny.pt" in msg and "download_ckpts.sh sam2.1" in msg and "model.checkpoint=null" in msg
    )
    assert not (tmp_path / "run" / "splits.json").exists()  # refused before anything is written


def test_auto_checkpoint_found_and_recorded(data_root, random_t64, tmp_path):
    out = tmp_path / "run"
    run_entry(
        "train_2d",
        [
            *SMALL_NO_CKPT,
            "train=false",
            f"dataset.root={data_root / 'kvasir'}",
            f"paths.checkpoint_dir={random_t64.parent}",
        ],
        out,
        small=False,
    )
    w = json.loads((out / "run_summary.json").read_text(encoding="utf-8"))["weights"]
    from medseg.train.weights import sha256_file

    assert w["source"] == str(random_t64.resolve()) and w["sha256"] == sha256_file(random_t64)


def test_null_checkpoint_is_random_warned_and_recorded(data_root, tmp_path, caplog):
    out = tmp_path / "run"
    with caplog.at_level("WARNING"):
        run_entry("train_2d", ["train=false", f"dataset.root={data_root / 'kvasir'}"], out)
    assert any("RANDOM weights" in r.getMessage() for r in caplog.records)
    assert json.loads((out / "run_summary.json").read_text(encoding="utf-8"))["weights"]["source"] == "random"


@pytest.mark.parametrize(
    "variant,file",
    [
        ("sam2_hiera_t", "sam2_hiera_tiny.pt"),
        ("sam2_hiera_s", "sam2_hiera_small.pt"),
        ("sam2_hiera_b+", "sam2_hiera_base_plus.pt"),
        ("sam2_hiera_l", "sam2_hiera_large.pt"),
        ("sam2.1_hiera_t", "sam2.1_hiera_tiny.pt"),
        ("sam2.1_hiera_s", "sam2.1_hiera_small.pt"),
        ("sam2.1_hiera_b+", "sam2.1_hiera_base_plus.pt"),
        ("sam2.1_hiera_l", "sam2.1_hiera_large.pt"),
        ("medsam2", "MedSAM2_latest.pt"),
    ],
)
def test_each_variant_defaults_to_its_own_file(variant, file, tmp_path):
    """A Hiera-size multirun must compare four sizes' own weights, not four random models."""
    cfg = compose_cfg("train_2d", [f"model={variant}", "paths.checkpoint_dir=/ck"], tmp_path)
    assert cfg.model.checkpoint == "auto"
    assert cfg.model.net.checkpoint == "auto" and cfg.model.net.default_checkpoint == f"/ck/{file}"
    assert "download_ckpts.sh" in cfg.model.net.download_hint


def test_baseline_missing_checkpoint_fails(data_root, tmp_path):
    """Defect 2: `train=false model=unet model.checkpoint=/nonexistent.pth` scored random weights."""
    with pytest.raises(FileNotFoundError, match="nonexistent.pth"):
        run_entry(
            "train_2d",
            [
                "train=false",
                "model=unet",
                f"dataset.root={data_root / 'kvasir'}",
                "model.checkpoint=/nonexistent.pth",
            ],
            tmp_path / "run",
        )


def test_baseline_honours_checkpoint_for_evaluation(data_root, tmp_path):
    common = ["model=unet", f"dataset.root={data_root / 'kvasir'}", "trainer.limit_val_batches=null"]
    run_entry("train_2d", [*common, "optim.lr=0.01"], tmp_path / "train")
    trained = read_csv(tmp_path / "train" / "val_cases.csv")
    run_entry(
        "train_2d",
        [*common, "train=false", f"model.checkpoint={tmp_path / 'train' / 'checkpoint_last.pth'}", "seed=7"],
        tmp_path / "eval",
    )
    again = read_csv(tmp_path / "eval" / "val_cases.csv")
    assert [r["dice"] for r in again] == [r["dice"] for r in trained]
    w = json.loads((tmp_path / "eval" / "run_summary.json").read_text(encoding="utf-8"))["weights"]
    assert w["source"].endswith("checkpoint_last.pth")


def test_resnet50_encoder_without_weights_says_random(data_root, tmp_path, caplog):
    out = tmp_path / "run"
    with caplog.at_level("WARNING"):
        run_entry("train_2d", ["model=resnet50_frozen_decoder", f"dataset.root={data_root / 'kvasir'}"], out)
    assert any("random init" in r.getMessage() for r in caplog.records)
    w = json.loads((out / "run_summary.json").read_text(encoding="utf-8"))["weights"]
    assert w["encoder"]["source"] == "random"


# ---------------------------------------------------------------------- automatic mode
def test_automatic_mode_separates_classes_and_predicts_declared_ones(data_root, tmp_path):
    """Defect 6: one object per class *present in the reference*, all fed identical inputs."""
    from medseg.eval.evaluation import EvalProtocol, eval_batch_2d
    from medseg.run.app import build_model
    from medseg.run.context import prepare_data

    over = [
        *SMALL,
        "prompt=none",
        "dataset=refuge",
        "dataset.target=both",
        f"dataset.root={data_root / 'refuge'}",
    ]
    cfg = compose_cfg("train_2d", over, tmp_path)
    ctx = prepare_data(cfg, tmp_path, mode="2d")
    from medseg.run.app import build_task

    model = build_model(cfg, torch.device("cpu"))
    task = build_task(cfg, ctx, "task_2d")
    task.prepare_model(model)
    assert hasattr(model, "class_prompts")
    s = ctx.val_samples.get(0)
    s["label"] = torch.where(torch.as_tensor(s["label"]) == 2, 0, torch.as_tensor(s["label"]))  # no cup here
    batch = eval_batch_2d(s, EvalProtocol.from_cfg(cfg))
    assert batch.obj_class.tolist() == [1, 2]  # the declared classes, not the reference's
    model.eval()
    with torch.no_grad():
        logits = task.predict(model, batch)
    assert not torch.equal(logits[0], logits[1])


def test_automatic_mode_trains_iou_head_with_dice_bce():
    """Defect 6: with loss=dice_bce/dice_ce the IoU head was never trained (multimask picks by it)."""
    from medseg.train.losses import DiceBCELoss, DiceCELoss

    torch.manual_seed(0)
    for loss in (DiceBCELoss(), DiceCELoss()):
        logits = torch.randn(2, 3, 16, 16)
        target = torch.rand(2, 16, 16) > 0.5
        iou = torch.rand(2, 3, requires_grad=True)
        out = loss(logits, target, iou_pred=iou)
        assert "iou" in out and float(out["iou"]) > 0
        out["loss"].backward()
        assert iou.grad is not None and iou.grad.abs().sum() > 0
        single = loss(logits[:, :1], target, iou_pred=iou[:, :1].detach())
        assert "iou" not in single  # box prompts: exactly Dice + BCE/CE as published


def test_automatic_mode_refused_in_3d_with_one_line(data_root, tmp_path):
    with pytest.raises(ValueError, match="prompt=none .* 2D only"):
        run_entry("train_3d", ["prompt=none", f"dataset.root={data_root / 'nnunet'}"], tmp_path / "run")


def test_automatic_mode_two_classes_trains_and_evaluates(data_root, tmp_path):
    out = tmp_path / "run"
    over = ["prompt=none", "dataset=refuge", "dataset.target=both", f"dataset.root={data_root / 'refuge'}"]
    run_entry("train_2d", over, out)
    rows = read_csv(out / "val_cases.csv")
    assert {r["class_id"] for r in rows} == {"1", "2"}
    assert all(r["eval_protocol"] == "none:declared-classes" for r in rows)
    # the learned class prompts are saved and restored for evaluation
    run_entry(
        "train_2d", [*over, "train=false", f"model.checkpoint={out / 'checkpoint_best.pth'}"], tmp_path / "ev"
    )
    assert read_csv(tmp_path / "ev" / "val_cases.csv")


def test_compare_shows_weights_and_protocol_per_arm(data_root, random_t64, tmp_path):
    import importlib.util

    from tests.conftest import ROOT

    spec = importlib.util.spec_from_file_location("compare_tool", ROOT / "tools" / "compare.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    compare_runs = tool.compare_runs

    common = [f"dataset.root={data_root / 'kvasir'}", "train=false"]
    run_entry("train_2d", common, tmp_path / "random")
    run_entry("train_2d", [*common, f"model.checkpoint={random_t64}"], tmp_path / "meta")
    rows = compare_runs([tmp_path / "random", tmp_path / "meta"], tmp_path / "cmp", names=["a", "b"])
    assert rows[0]["weights"] == "random" and rows[1]["weights"].startswith("sam2.1_hiera_tiny.pt (sha256 ")
    assert rows[0]["eval_protocol"] == rows[1]["eval_protocol"] == "box:tight"
    md = (tmp_path / "cmp" / "comparison.md").read_text(encoding="utf-8")
    assert "RANDOM weights" in md and "sam2.1_hiera_tiny.pt (sha256" in md
