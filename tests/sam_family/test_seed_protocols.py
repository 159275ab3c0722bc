"""Each seed study's experiment equals its seed (issue 23, 1): the values its `--cfg job` shows, per arm,
and the one piece of code a seed fixes (seed 001's SimpleDecoder)."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import compose_cfg


def _job(study: str, arm: str, tmp_path, *extra: str):
    """The composed config of one job of ``study`` (what ``--cfg job`` shows for that job)."""
    return compose_cfg("train_2d", [f"experiment={study}", f"+arm={arm}", *extra], tmp_path)


# seed 000: MedSAM on Kvasir-SEG; the ResNet scratch model at 512x512 for 50 epochs (the seed's default of
# "40-50 epochs"), every arm on Kvasir-SEG's own train.txt / val.txt.
@pytest.mark.parametrize("arm", ["medsam_zero_shot", "medsam_finetuned", "resnet_box_prompt"])
def test_seed_000_medsam_kvasir_uses_kvasirs_split_files(arm, tmp_path):
    c = _job("medsam_kvasir", arm, tmp_path)
    assert c.dataset.split.use_native is True  # train.txt / val.txt when present
    assert list(c.dataset.split.ratios) == [0.88, 0.12, 0.0]  # only without the files: 880 / 120


def test_seed_000_resnet_scratch_arm_is_512_px_for_50_epochs(tmp_path):
    c = _job("medsam_kvasir", "resnet_box_prompt", tmp_path)
    assert c.model.name == "resnet_box_prompt" and c.model.image_size == 512
    assert c.trainer.max_epochs == 50
    assert c.model.net.encoder_weights is None  # from scratch
    for arm in ("medsam_zero_shot", "medsam_finetuned"):
        assert _job("medsam_kvasir", arm, tmp_path).model.image_size == 1024  # MedSAM's own size


# seed 001: frozen SAM ViT-B + SimpleDecoder; its 80/10/10 split's test part is scored at the end.
def test_seed_001_simple_decoder_is_one_transposed_conv_upsampling_x2():
    from medseg.train.segmenter import simple_decoder

    dec = simple_decoder(32, 16, 1)
    ups = [m for m in dec.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert len(ups) == 1 and tuple(ups[0].stride) == (2, 2)
    assert dec(torch.zeros(1, 32, 8, 8)).shape == (1, 1, 16, 16)


@pytest.mark.parametrize("arm", ["frozen_sam_vit_b", "frozen_resnet50"])
def test_seed_001_scores_the_test_part_of_its_split(arm, tmp_path):
    c = _job("sam_frozen_decoder_kvasir", arm, tmp_path)
    assert list(c.dataset.split.ratios) == [0.8, 0.1, 0.1] and c.dataset.split.use_native is False
    assert c.trainer.batch_size == 8 and c.model.image_size == 512
    assert c.test_after_training is True


# seed 003: MedSAM automatic (no prompt) tumour segmentation, 256 px, batch 4.
@pytest.mark.parametrize("arm", ["medsam_zero_shot", "medsam_finetuned"])
def test_seed_003_medsam_automatic_batch_4(arm, tmp_path):
    c = _job("medsam_automatic", arm, tmp_path)
    assert c.trainer.batch_size == 4 and c.model.image_size == 256 and c.prompt.type == "none"


# seed 004: `sbatch train_slurm.sh yolo` trains YOLOv11L.
def test_seed_004_yolo_is_yolo11l(tmp_path):
    c = compose_cfg("train_2d", ["model=yolo_seg"], tmp_path)
    assert c.model.net.yolo_cfg == "yolo11l-seg.yaml"
    tiny = compose_cfg("train_2d", ["model=yolo_seg", "model.net.yolo_cfg=yolo11n-seg.yaml"], tmp_path)
    assert tiny.model.net.yolo_cfg == "yolo11n-seg.yaml"  # tests keep a tiny variant by override
    arm = compose_cfg("train_2d", ["experiment=kvasir_baselines", "+arm=yolo_seg"], tmp_path)
    assert OmegaConf.select(arm, "model.net.yolo_cfg") == "yolo11l-seg.yaml"


def test_test_after_training_scores_the_test_part_like_val(tmp_path):
    import csv
    import json

    from medseg.data import synthetic
    from tests.conftest import run_entry

    root = synthetic.write_kvasir(tmp_path / "kvasir", n=10, size=64)
    out = tmp_path / "run"
    run_entry(
        "train_2d",
        [
            "model=frozen_encoder_decoder", "model.encoder=resnet50", "++model.resnet_weights=null",
            f"dataset.root={root}", "dataset.split.use_native=false", "dataset.split.ratios=[0.6,0.2,0.2]",
            "test_after_training=true", "trainer.limit_val_batches=null",
        ],
        out,
    )  # fmt: skip
    splits = json.loads((out / "splits.json").read_text(encoding="utf-8"))
    with open(out / "test_cases.csv", encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted({r["case_id"] for r in rows}) == sorted(splits["test"]) and splits["test"]
    assert not set(splits["test"]) & set(splits["val"])
    with open(out / "test_metrics.csv", encoding="utf-8", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert 0.0 <= float(row["test/dice"]) <= 1.0 and row["weights"] == "checkpoint_best.pth"
    assert json.loads((out / "run_summary.json").read_text(encoding="utf-8"))["test"][
        "test/dice"
    ] == pytest.approx(float(row["test/dice"]), abs=1e-5)
