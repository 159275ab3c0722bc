"""The published studies with SAM / MedSAM arms: each experiment composes to its protocol (fast), runs
2 steps per arm end to end with the outputs contract and one comparison (slow); the frozen-encoder
model's ``auto`` encoder; SAM's longest-side geometry in scoring; ``dataset.max_slices``."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from tests.conftest import ROOT, compose_cfg, run_cli, run_entry

# study -> (arms, data tree, {config key: expected value} for every arm)
STUDIES = {
    "medsam_kvasir": (
        ["medsam_zero_shot", "medsam_finetuned", "resnet_box_prompt"],
        "kvasir",
        {"dataset.split.use_native": True, "dataset.split.ratios": [0.88, 0.12, 0.0], "prompt.type": "box"},
    ),
    "sam_frozen_decoder_kvasir": (
        ["frozen_sam_vit_b", "frozen_resnet50"],
        "kvasir",
        {
            "dataset.split.ratios": [0.8, 0.1, 0.1],
            "dataset.split.seed": 42,
            "model.image_size": 512,
            "trainer.batch_size": 8,
            "model.name": "frozen_encoder_decoder",
        },
    ),  # fmt: skip
    "sam_flare_adrenal": (
        ["sam_zero_shot", "sam_decoder_only"],
        "nnunet",
        {
            "dataset.intensity.window": "mediastinum",
            "dataset.max_slices": 800,
            "dataset.labels": [7, 8],
            "model.image_size": 512,
            "prompt.type": "box",
            "model.name": "sam_vit_b",
        },
    ),  # fmt: skip
    "medsam_automatic": (
        ["medsam_zero_shot", "medsam_finetuned"],
        "folder2d",
        {
            "prompt.type": "none",
            "model.image_size": 256,
            "model.name": "medsam_vit_b",
            "dataset.mask_mode": "binary",
        },
    ),
    "sam2_vs_sam": (
        ["sam2.1_hiera_t", "sam2.1_hiera_s", "sam_vit_b", "medsam_vit_b"],
        "kvasir",
        {
            "dataset.split.ratios": [0.8, 0.1, 0.1],
            "model.trainable": "frozen_prompt_encoder",
            "model.image_size": 1024,
        },
    ),
}
# arm -> what distinguishes it
ARMS = {
    "medsam_zero_shot": {"train": False, "model.name": "medsam_vit_b"},
    "medsam_finetuned": {
        "train": True,
        "model.trainable": "frozen_prompt_encoder",
        "loss._target_": "medseg.train.losses.DiceBCELoss",
    },
    "resnet_box_prompt": {"train": True, "model.name": "resnet_box_prompt"},
    "frozen_sam_vit_b": {"model.encoder": "sam_vit_b", "loss._target_": "medseg.train.losses.DiceBCELoss"},
    "frozen_resnet50": {"model.encoder": "resnet50"},
    "sam_zero_shot": {"train": False},
    "sam_decoder_only": {
        "train": True,
        "model.trainable": "decoder_only",
        "loss._target_": "medseg.train.losses.DiceCELoss",
    },
}


def _sweep_arms(cfg) -> tuple[str, list[str]]:
    ((key, value),) = cfg.hydra.sweeper.params.items()
    return key, [v.strip() for v in str(value).split(",")]


def _get(cfg, key):
    from omegaconf import OmegaConf

    v = OmegaConf.select(cfg, key)
    return OmegaConf.to_container(v) if OmegaConf.is_config(v) else v


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_study_composes_to_its_protocol_for_every_arm(study, tmp_path):
    arms, _, expected = STUDIES[study]
    cfg = compose_cfg("train_2d", [f"experiment={study}"], tmp_path)
    key, swept = _sweep_arms(cfg)
    assert swept == arms and str(cfg.hydra.mode).endswith("MULTIRUN") and cfg.compare_runs is True
    for arm in arms:
        sel = f"+arm={arm}" if key == "+arm" else f"{key}={arm}"
        c = compose_cfg("train_2d", [f"experiment={study}", sel], tmp_path)
        assert c.task_name == study
        for k, v in {**expected, **ARMS.get(arm, {})}.items():
            assert _get(c, k) == v, (study, arm, k)
        if key == "model":
            assert c.model.name == arm


def test_study_commands_are_in_the_readme():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for study in STUDIES:
        assert f"python train_2d.py experiment={study} dataset.root=" in text, study


# ---------------------------------------------------------------------- frozen encoder + decoder
def test_auto_encoder_takes_resnet50_without_the_sam_file_and_records_it(data_root, tmp_path, caplog):
    missing = tmp_path / "no_such_dir" / "sam_vit_b_01ec64.pth"
    out = tmp_path / "run"
    overrides = [
        f"dataset.root={data_root / 'kvasir'}", "model=frozen_encoder_decoder", f"model.default_encoder_checkpoint={missing}",
        "verify_data=false", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1", "trainer.batch_size=1",
    ]  # fmt: skip
    with caplog.at_level(logging.INFO):
        run_entry("train_2d", overrides, out)
    assert any("encoder resnet50" in r.getMessage() and "not found" in r.getMessage() for r in caplog.records)
    enc = json.loads((out / "run_summary.json").read_text(encoding="utf-8"))["weights"]["encoder"]
    assert enc["name"] == "resnet50" and enc["requested"] == "auto" and str(missing) in enc["reason"]
    for name in ("checkpoint_last.pth", "checkpoint_best.pth", "metrics.csv", "val_cases.csv", "splits.json"):
        assert (out / name).is_file(), name
    # the trained model evaluates from its own checkpoint (model.checkpoint is honoured, strictly)
    ev = tmp_path / "eval"
    run_entry("train_2d", [*overrides, "train=false", f"model.checkpoint={out / 'checkpoint_best.pth'}"], ev)
    weights = json.loads((ev / "run_summary.json").read_text(encoding="utf-8"))["weights"]
    assert weights["source"] == str((out / "checkpoint_best.pth").resolve())
    assert weights["encoder"]["name"] == "resnet50"


def test_auto_encoder_takes_sam_when_its_file_exists(tmp_path):
    from segment_anything import sam_model_registry

    from sam_family.frozen_encoder import SamEncoderDecoder

    path = tmp_path / "sam_vit_b_01ec64.pth"
    torch.save(sam_model_registry["vit_b"](checkpoint=None).state_dict(), path)
    cfg = compose_cfg(
        "train_2d",
        ["model=frozen_encoder_decoder", "model.image_size=64", f"model.default_encoder_checkpoint={path}"],
        tmp_path,
    )
    model = instantiate(cfg.model.net)
    assert isinstance(model, SamEncoderDecoder) and model.weights_info["encoder"]["name"] == "sam_vit_b"
    assert model.weights_info["encoder"]["source"] == str(path.resolve())
    assert not any(p.requires_grad for p in model.image_encoder.parameters())
    assert any(p.requires_grad for p in model.decoder.parameters())
    out = model.forward_objects(
        torch.randn(1, 3, 64, 64), torch.tensor([[2.0, 2, 30, 30]]), torch.tensor([0])
    )
    assert out.shape == (1, 64, 64)
    from sam_family.frozen_encoder import build_frozen_encoder_decoder

    with pytest.raises(
        FileNotFoundError,
        match=r"model.encoder_checkpoint=auto: .*missing\.pth not found.*download_ckpts\.sh sam",
    ):
        build_frozen_encoder_decoder(
            encoder="sam_vit_b", default_encoder_checkpoint=str(tmp_path / "missing.pth"),
            download_hint="checkpoints/download_ckpts.sh sam",
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"model.encoder='vgg': choose one of"):
        build_frozen_encoder_decoder(encoder="vgg")


# ---------------------------------------------------------------------- geometry and slice selection
def test_longest_side_pads_and_scoring_ignores_the_padding(tmp_path):
    """SAM's geometry: aspect kept, padded bottom/right; scores on the original grid use the unpadded part
    only (a prediction that is perfect in the image and positive in the padding scores Dice 1)."""
    from types import SimpleNamespace

    from medseg.data.samples import ImageSamples
    from medseg.data.transforms import build_transform
    from medseg.eval.evaluation import evaluate_2d
    from medseg.train.task_settings import TaskSettings

    label = np.zeros((40, 80), np.int64)
    label[10:30, 20:60] = 1
    case = {"image": np.full((1, 40, 80, 3), 100, np.float32), "label": label[None], "case_id": "c0",
            "spacing": (1.0, 0.5, 0.5)}  # fmt: skip
    tr = build_transform({"modality": "rgb"}, 64, resize="longest_side")
    s = tr(case)
    assert s["valid_hw"] == (32, 64) and s["image"].shape == (1, 3, 64, 64)
    assert s["label"][0, 32:].sum() == 0 and s["image"][0, :, 32:].abs().max() == 0  # zero padding
    assert s["spacing"][1:] == pytest.approx((0.5 * 40 / 32, 0.5 * 80 / 64))

    class PerfectInImage:  # the label as logits, +10 (foreground) everywhere in the padding
        def predict(self, model, batch):
            lab = batch.masks.float() * 20 - 10
            lab[..., 32:, :] = 10.0
            return lab

    cfg = compose_cfg("train_2d", ["model=sam_vit_b", "model.image_size=64"], tmp_path)
    ctx = SimpleNamespace(
        device=torch.device("cpu"), label_names={0: "background", 1: "polyp"},
        val_samples=ImageSamples([case], tr, augment=False),
    )  # fmt: skip
    summary, rows, _ = evaluate_2d(PerfectInImage(), None, ctx, TaskSettings.from_cfg(cfg))
    assert summary["val/dice"] == pytest.approx(1.0, abs=0.02)  # without the crop: about 0.5


def test_max_slices_keeps_the_largest_labelled_slices(tmp_path):
    from medseg.data import synthetic
    from medseg.data.datasets import NnUNetDataset, Slices2D
    from medseg.data.datasets.slices import largest_slices

    root = synthetic.write_nnunet(tmp_path / "nn", n_cases=3, depth=8, size=32, n_organs=2)
    ds = NnUNetDataset(root, max_slices=5)
    assert ds.max_slices == 5
    every = Slices2D(ds)
    labels = {v: ds.load_case(v)["label"] for v in ds.case_ids}
    area = {(v, z): int((labels[v][z] > 0).sum()) if labels[v] is not None else 0 for v, z in every.index}
    keep = largest_slices(ds, 5)
    assert len(keep) == 5 and min(area[k] for k in keep) >= max(a for k, a in area.items() if k not in keep)
    view = Slices2D(ds.subset(ds.case_ids[:2]), keep=keep)
    assert set(view.index) == {k for k in keep if k[0] in ds.case_ids[:2]}
    assert set(view.subset(view.case_ids).index) == set(view.index)
    with pytest.raises(Exception, match="dataset.max_slices"):
        NnUNetDataset(root, max_slices=0)


# ---------------------------------------------------------------------- each study end to end (slow)
TINY = [
    "model.image_size=64", "trainer.device=cpu", "trainer.num_workers=0", "trainer.amp=false",
    "trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2",
    "trainer.batch_size=1", "trainer.progress_bar=false", "logger.log_images=false", "model.checkpoint=null",
]  # fmt: skip
STUDY_EXTRA = {
    "sam_frozen_decoder_kvasir": ["++model.encoder_checkpoint=null", "++model.resnet_weights=null"],
    "sam_flare_adrenal": ["dataset.labels=[1,2]", "dataset.max_slices=6"],
    "medsam_automatic": [],
    "medsam_kvasir": ["dataset.split.ratios=[0.75,0.25,0.0]"],
    "sam2_vs_sam": [],
}


@pytest.mark.slow
@pytest.mark.parametrize("study", sorted(STUDIES))
def test_study_runs_every_arm_and_compares_them(study, data_root, tmp_path):
    arms, tree, _ = STUDIES[study]
    sweep = tmp_path / "sweep"
    r = run_cli(
        "train_2d.py", f"experiment={study}", f"dataset.root={data_root / tree}", *TINY,
        *STUDY_EXTRA[study], f"hydra.sweep.dir={sweep}", timeout=1800,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if (p / "run_summary.json").is_file())
    assert len(jobs) == len(arms)
    for job in jobs:
        for name in ("metrics.csv", "val_cases.csv", "splits.json", ".hydra/config.yaml", "run_summary.json"):
            assert (job / name).is_file(), (job, name)
        trained = json.loads((job / "run_summary.json").read_text(encoding="utf-8"))["steps"] > 0
        assert trained == (job / "checkpoint_last.pth").is_file(), job
    assert (
        len({(j / "splits.json").read_text(encoding="utf-8") for j in jobs}) == 1
    )  # one split for every arm
    table = (sweep / "comparison" / "comparison.md").read_text(encoding="utf-8")
    assert all(arm in table for arm in arms), table[:2000]
