"""inference_2d (issue 22): any family's checkpoint segments a folder of images without masks into one PNG +
.npy mask per image; with masks, metrics.csv; the output rules and one-line errors of inference_3d."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from medseg.data import synthetic
from medseg.train.checkpoint import CKPT_FORMAT
from tests.conftest import compose_cfg
from tests.fault_helpers import one_line_exit, snapshot


def _ckpt(model: str, tmp_path, *extra: str):
    cfg = compose_cfg(
        "train_2d", [f"model={model}", "model.image_size=64", "model.checkpoint=null", *extra], tmp_path / "t"
    )
    torch.manual_seed(0)
    net = instantiate(cfg.model.net)
    path = tmp_path / f"{model}.pth"
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    torch.save({"format": CKPT_FORMAT, "model": net.state_dict(), "model_cfg": model_cfg}, path)
    return path


def _cfg(tmp_path, ckpt, images, out, *extra):
    return compose_cfg(
        "inference_2d",
        [f"checkpoint={ckpt}", f"input_dir={images}", f"output_dir={out}", "trainer.device=cpu", *extra],
        tmp_path / "hydra",
    )


@pytest.fixture
def folder(tmp_path):
    return synthetic.write_folder2d(tmp_path / "f", n=3, size=48)


def test_unet_automatic_on_images_without_masks_writes_one_mask_per_image(folder, tmp_path):
    from medseg.run.inference_2d import run_inference_2d

    out = tmp_path / "preds"
    rows = run_inference_2d(_cfg(tmp_path, _ckpt("unet", tmp_path), folder / "images", out, "prompt=none",
                                 "save_vis=true"))  # fmt: skip
    assert rows == []
    stems = sorted(p.stem for p in (folder / "images").iterdir())
    assert sorted(p.stem for p in out.glob("*.png")) == stems and not (out / "metrics.csv").exists()
    for s in stems:
        png = np.asarray(Image.open(out / f"{s}.png"))
        assert png.shape == (48, 48) and np.array_equal(png, np.load(out / f"{s}.npy"))
        assert (out / "vis" / f"{s}.png").is_file()


def test_sam_with_prompts_file_and_masks_writes_metrics(folder, tmp_path):
    from medseg.run.inference_2d import run_inference_2d

    stems = sorted(p.stem for p in (folder / "images").iterdir())
    pf = tmp_path / "prompts.json"
    pf.write_text(json.dumps({s: [{"class": 1, "box": [8, 8, 40, 40]}] for s in stems}), encoding="utf-8")
    out = tmp_path / "preds"
    cfg = _cfg(tmp_path, _ckpt("sam_vit_b", tmp_path), folder / "images", out, f"prompts_file={pf}",
               f"mask_dir={folder / 'masks'}")  # fmt: skip
    rows = run_inference_2d(cfg)
    assert sorted({r["case_id"] for r in rows}) == stems and (out / "metrics.csv").is_file()
    assert rows and all("dice" in r for r in rows)
    assert all(np.load(out / f"{s}.npy").shape == (48, 48) for s in stems)


def test_non_empty_output_and_bad_prompts_are_one_line_and_change_nothing(folder, tmp_path, capsys):
    from medseg.run.inference_2d import run_inference_2d

    ck = _ckpt("unet", tmp_path)
    out = tmp_path / "preds"
    out.mkdir()
    (out / "old.png").write_bytes(b"earlier")
    before = snapshot(out)
    line = one_line_exit(
        lambda: run_inference_2d(_cfg(tmp_path, ck, folder / "images", out, "prompt=none")), capsys
    )
    assert "overwrite=true" in line and snapshot(out) == before
    pf = tmp_path / "p.json"
    pf.write_text(json.dumps({"sample_000": [{"class": 1, "box": [0, 0, 99, 10]}]}), encoding="utf-8")
    fresh = tmp_path / "fresh"
    line = one_line_exit(
        lambda: run_inference_2d(_cfg(tmp_path, ck, folder / "images", fresh, f"prompts_file={pf}")), capsys
    )
    assert str(pf) in line and "outside the image" in line and not fresh.exists()
    line = one_line_exit(lambda: run_inference_2d(_cfg(tmp_path, ck, folder / "images", fresh)), capsys)
    assert "prompts_file" in line and not fresh.exists()
