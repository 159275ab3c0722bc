"""inference_3d for every family (issue 22): our checkpoint of SAM ViT-B or U-Net segments the volumes of an
nnU-Net layout slice by slice (each organ's key-slice box carried over the slices it spans) and writes
(D, H, W) ``.npy`` and a NIfTI with the input's geometry. CPU, 64 px, random weights."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from medseg.data.datasets import build_dataset
from medseg.data.splits import dataset_fingerprint
from medseg.train.checkpoint import CKPT_FORMAT
from tests.conftest import compose_cfg


def _our_checkpoint(model: str, nnunet, tmp_path, *extra: str, n_val: int = 4):
    """A checkpoint as the engine writes it (format, weights, the composed model node, split, fingerprint)."""
    cfg = compose_cfg(
        "train_2d",
        [f"model={model}", "model.image_size=64", "model.checkpoint=null", "dataset=nnunet",
         f"dataset.root={nnunet}", *extra],
        tmp_path / "train",
    )  # fmt: skip
    torch.manual_seed(0)
    net = instantiate(cfg.model.net)
    ds = build_dataset(cfg.dataset)
    ids = sorted(ds.case_ids)
    path = tmp_path / f"{model}_checkpoint_best.pth"
    torch.save(
        {
            "format": CKPT_FORMAT, "model": net.state_dict(),
            "model_cfg": OmegaConf.to_container(cfg.model, resolve=True),
            "splits": {"train": ids[:2], "val": ids[2:n_val], "test": ids[n_val:]},
            "dataset": dataset_fingerprint(ds),
        },
        path,
    )  # fmt: skip
    return path, ids[2:n_val]


def _infer(ckpt, nnunet, out, *extra):
    from func_3d.inference import run_inference

    cfg = compose_cfg(
        "inference_3d",
        [f"checkpoint={ckpt}", f"dataset.root={nnunet}", "split=val", f"output_dir={out}",
         "trainer.device=cpu", *extra],
        out.parent / "hydra",
    )  # fmt: skip
    return run_inference(cfg)


@pytest.mark.parametrize(("model", "extra"), [("sam_vit_b", []), ("unet", ["model.num_classes=2"])])
def test_inference_3d_with_an_image_family_writes_masks_on_the_input_grid(model, extra, nnunet, tmp_path):
    # ViT-B pads 64 px to 14 x 14-token windows (~2 s a slice on a CPU): one volume is enough for SAM
    ckpt, val = _our_checkpoint(model, nnunet, tmp_path, *extra, n_val=3 if model == "sam_vit_b" else 4)
    out = tmp_path / "preds"
    rows = _infer(ckpt, nnunet, out)
    assert {r["case_id"] for r in rows} == set(val)
    for cid in val:
        img = nib.load(str(nnunet / "imagesTr" / f"{cid}_0000.nii.gz"))
        lab = np.asarray(nib.load(str(nnunet / "labelsTr" / f"{cid}.nii.gz")).dataobj).transpose(2, 1, 0)
        pred = np.load(out / f"{cid}.npy")
        assert pred.shape == lab.shape and pred.dtype.kind in "iu"
        assert set(np.unique(pred)) <= {0, 1, 2}
        nii = nib.load(str(out / f"{cid}.nii.gz"))
        assert nii.shape == img.shape and np.allclose(nii.affine, img.affine)
        assert np.array_equal(np.asarray(nii.dataobj).transpose(2, 1, 0), pred)
        if model == "sam_vit_b":  # prompted: nothing on slices where the reference has no organ
            empty = ~lab.reshape(lab.shape[0], -1).any(1)
            assert not pred[empty].any()
    assert (out / "metrics.csv").is_file()
    summary = json.loads((out / "run_summary.json").read_text(encoding="utf-8"))
    assert summary["model"] == model and summary["weights"]["model"] == model  # the record names its model
