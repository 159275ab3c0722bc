"""Typed batches for the SAM2 paths and their collate functions (docs/DESIGN.md, "Batches")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from medseg.data.prompts import PromptConfig, object_prompt
from medseg.errors import DataError


def to_device(obj: Any, device: torch.device | str) -> Any:
    """A copy of a dataclass of tensors with every tensor field moved to ``device``."""
    kw = {f.name: getattr(obj, f.name) for f in fields(obj)}
    return type(obj)(
        **{k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    )


def _pin(obj: Any) -> Any:
    """Page-locked copy of a batch's tensors (DataLoader ``pin_memory=True`` calls ``batch.pin_memory()``),
    so the copy to the GPU can overlap compute."""
    kw = {f.name: getattr(obj, f.name) for f in fields(obj)}
    return type(obj)(**{k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in kw.items()})


@dataclass
class ImageBatch:
    """B images and N objects flattened over the batch (S = image size, P = points per object).

    images [B,3,S,S] float (ImageNet-normalised); masks [N,S,S] bool; obj_img [N] long (index of the
    object's image); obj_class [N] long (label id); boxes [N,4] float xyxy (zeros when unused);
    points [N,P,2] float (x, y); point_labels [N,P] long (1 pos, 0 neg, -1 pad); mask_prompts [N,S,S]
    float; case_ids list of B str; spacing [B,2] float (sy, sx) of the resized grid; valid None, or
    [N,S,S] bool, False on the unannotated pixels (nnU-Net ``ignore``) of each object's image, which
    the loss leaves out.
    """

    images: torch.Tensor
    masks: torch.Tensor
    obj_img: torch.Tensor
    obj_class: torch.Tensor
    boxes: torch.Tensor
    points: torch.Tensor
    point_labels: torch.Tensor
    mask_prompts: torch.Tensor
    case_ids: list[str]
    spacing: torch.Tensor
    valid: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> ImageBatch:
        return to_device(self, device)

    def pin_memory(self) -> ImageBatch:
        return _pin(self)


def _squeeze_2d(sample: dict) -> tuple[torch.Tensor, torch.Tensor]:
    img, lab = torch.as_tensor(sample["image"]), sample.get("label")
    if img.ndim == 4:
        if img.shape[0] != 1:
            raise DataError(
                f"{sample.get('case_id', '?')}: 2D collate needs one slice, got image {tuple(img.shape)}"
            )
        img = img[0]
    if lab is None:
        raise DataError(f"{sample.get('case_id', '?')}: 2D collate needs a label")
    lab = torch.as_tensor(lab)
    lab = lab[0] if lab.ndim == 3 else lab
    if img.shape[-2:] != lab.shape:
        raise DataError(
            f"{sample.get('case_id', '?')}: image {tuple(img.shape)} and label {tuple(lab.shape)} differ"
        )
    return img, lab


def collate_sam2_2d(
    samples: Sequence[dict], prompt_cfg: Any, rng: np.random.Generator | None = None
) -> ImageBatch:
    """Transformed 2D samples (image (3,S,S) or (1,3,S,S), label (S,S) or (1,S,S)) -> ImageBatch.

    One object per (image, label id): ids present in the label, plus, under ``prompt.empty: negative``,
    the sample's declared ``label_names`` ids that are absent (empty mask, negative clicks). Images
    without any object contribute none (N may be 0). A sample's ``ignore_label`` (nnU-Net) is no
    object; its pixels are False in ``valid``.
    """
    cfg = PromptConfig.from_cfg(prompt_cfg)
    rng = rng or np.random.default_rng()
    images, objs, obj_img, case_ids, spacing, valid = [], [], [], [], [], []
    any_ignore = False
    for b, s in enumerate(samples):
        img, lab = _squeeze_2d(s)
        images.append(img.float())
        case_ids.append(str(s.get("case_id", b)))
        sp = s.get("spacing", (1.0, 1.0, 1.0))
        spacing.append([float(sp[-2]), float(sp[-1])])
        lab_np = lab.numpy()
        ignore = s.get("ignore_label")
        annotated = np.ones(lab_np.shape, bool) if ignore is None else lab_np != int(ignore)
        any_ignore = any_ignore or ignore is not None
        declared = {int(i) for i in (s.get("label_names") or {}) if int(i) > 0} - {ignore}
        if cfg.kind.automatic:  # automatic mode: every declared class, whatever the reference holds
            ids = declared or set(np.unique(lab_np).tolist()) - {0, ignore}
        else:
            ids = set(np.unique(lab_np).tolist()) - {0, ignore}
            if cfg.empty == "negative":
                ids |= declared
        for oid in sorted(ids):
            p = object_prompt(lab_np == oid, cfg, rng, obj_id=int(oid))
            if p is not None:
                objs.append(p)
                obj_img.append(b)
                valid.append(annotated)
    size = images[0].shape[-2:]
    n = len(objs)
    n_pts = max((len(o["point_labels"]) for o in objs), default=0)
    points = torch.zeros(n, n_pts, 2)
    point_labels = torch.full((n, n_pts), -1, dtype=torch.long)
    for i, o in enumerate(objs):
        k = len(o["point_labels"])
        points[i, :k] = torch.from_numpy(o["points"])
        point_labels[i, :k] = torch.from_numpy(o["point_labels"])

    def stack(key: str, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
        if not objs:
            return torch.zeros(0, *shape, dtype=dtype)
        return torch.from_numpy(np.stack([o[key] for o in objs])).to(dtype)

    return ImageBatch(
        images=torch.stack(images),
        masks=stack("mask", torch.bool, tuple(size)),
        obj_img=torch.tensor(obj_img, dtype=torch.long),
        obj_class=torch.tensor([o["obj_id"] for o in objs], dtype=torch.long),
        boxes=stack("box", torch.float32, (4,)),
        points=points,
        point_labels=point_labels,
        mask_prompts=stack("mask_prompt", torch.float32, tuple(size)),
        case_ids=case_ids,
        spacing=torch.tensor(spacing, dtype=torch.float32),
        valid=(
            (torch.from_numpy(np.stack(valid)) if valid else torch.zeros(0, *size, dtype=torch.bool))
            if any_ignore
            else None
        ),
    )
