"""The model an inference run uses (``inference_3d.py``, ``inference_2d.py``), for every family.

``checkpoint=`` is our ``checkpoint_*.pth`` of any family (it records the composed ``model`` node, its
family under ``plugin``, variant and image size) or a family's native weights file (Meta's SAM2 ``.pt``,
SAM/MedSAM ``.pth``, a YOLO ``.pt``), which needs ``model=<name>``. The model is built through its
family (:func:`medseg.family.build_configured`), as training builds it, with ``checkpoint=`` as
``model.checkpoint``; every problem is one line naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from medseg.family import ModelFamily, build_configured, build_family
from medseg.train.checkpoint import CheckpointError, read_checkpoint


def _ours(ck: dict) -> bool:
    return str(ck.get("format", "")).startswith("sam2-medical")


def inference_model_cfg(cfg: DictConfig, ck: dict, path: str) -> DictConfig:
    """The composed ``model`` node to build: the checkpoint's own (ours) or ``model=`` (a native file),
    with ``model.checkpoint`` (and ``model.net.checkpoint``) set to ``path``."""
    given = cfg.get("model")
    if _ours(ck):
        mc = OmegaConf.create(ck.get("model_cfg") or {})
        if "plugin" not in mc:  # written before model yamls named their family (issue 22)
            if given is not None and (given.get("variant") or given.get("name")) == (
                mc.get("variant") or mc.get("name")
            ):
                size = mc.get("image_size", given.get("image_size"))
                mc = OmegaConf.create(OmegaConf.to_container(given, resolve=True))
                mc.image_size = size
                if "net" in mc and "image_size" in mc.net:
                    mc.net.image_size = size
            else:
                raise CheckpointError(
                    f"{path}: this checkpoint ({mc.get('name')}) does not name its model family: "
                    f"add model={mc.get('name')}"
                )
        key = "variant" if mc.get("variant") else "name"
        if given is not None and (
            given.get(key) != mc.get(key) or int(given.get("image_size", mc.image_size)) != int(mc.image_size)
        ):
            raise CheckpointError(
                f"{path}: checkpoint holds {mc.get('variant') or mc.get('name')} at {mc.get('image_size')} px "
                f"but model={given.get('name')} at {given.get('image_size')} px was given (drop model= to use "
                "the checkpoint's)"
            )
    else:
        if given is None:
            raise CheckpointError(
                f"{path}: a weights file not written by this suite does not say its model: add model=<name> "
                "(e.g. model=sam2.1_hiera_t, model=sam_vit_b, model=medsam_vit_b)"
            )
        mc = OmegaConf.create(OmegaConf.to_container(given, resolve=True))
    mc.checkpoint = path
    if "net" in mc and "checkpoint" in mc.net:
        mc.net.checkpoint = path
    return mc


def load_inference_model(cfg: DictConfig, device: torch.device) -> tuple[Any, ModelFamily, DictConfig]:
    """``(model in eval mode on device, its family, its model node)``; ``model.checkpoint_meta`` holds the
    checkpoint's ``format``, ``splits`` and ``dataset`` fingerprint (for the choice of cases)."""
    path = str(cfg.checkpoint)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    ck = read_checkpoint(path)
    mc = inference_model_cfg(cfg, ck, path)
    family = build_family(mc)
    model = build_configured(mc)
    model.checkpoint_meta = {k: ck.get(k) for k in ("format", "splits", "dataset")}
    if isinstance(model, torch.nn.Module):
        model = model.to(device).eval()
    return model, family, mc
