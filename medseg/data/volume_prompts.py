"""Prompts of a volume and slice-by-slice segmentation, for every family without its own propagation.

:class:`VolumePrompts` holds per object the prompt dicts of its prompted slices (as
:func:`medseg.data.prompts.object_prompt` makes them). SAM2 propagates them through the volume
(``func_3d.volume.segment_volume``); the image families (SAM/MedSAM, CNN, YOLO) segment each slice on its
own (:func:`segment_slices`), with the prompt of each object *carried* to the slices it spans
(:func:`carry_prompts`): a slice without a prompt of its own takes the one of the nearest prompted slice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medseg.data.batch import ImageBatch


@dataclass
class VolumePrompts:
    """Prompts of one volume in model-input pixels: ``{object index: {slice: prompt dict}}`` with
    prompt dicts as :func:`medseg.data.prompts.object_prompt` makes them (``box``, ``points``,
    ``point_labels``, ``mask_prompt``, ``empty``), plus the label id of each object index."""

    per_object: dict[int, dict[int, dict]]
    obj_ids: list[int]


def carry_prompts(vp: VolumePrompts, extent: dict[int, tuple[int, int]] | None = None) -> VolumePrompts:
    """Each object's prompt on every slice of its extent ``{object index: (first, last)}`` (default: from
    its first to its last prompted slice), taken from the nearest prompted slice (ties: the lower one)."""
    out: dict[int, dict[int, dict]] = {}
    for o, per_z in vp.per_object.items():
        zs = sorted(int(z) for z in per_z)
        if not zs:
            out[o] = {}
            continue
        lo, hi = (extent or {}).get(o, (zs[0], zs[-1]))
        have = np.asarray(zs)
        out[o] = {z: per_z[int(have[np.argmin(np.abs(have - z))])] for z in range(int(lo), int(hi) + 1)}
    return VolumePrompts(out, list(vp.obj_ids))


def extent_from_label(label_s: np.ndarray, vp: VolumePrompts) -> dict[int, tuple[int, int]]:
    """``{object index: (first, last)}`` slices where the (D,S,S) reference holds each object."""
    out = {}
    for o, i in enumerate(vp.obj_ids):
        zs = np.flatnonzero((np.asarray(label_s) == i).reshape(label_s.shape[0], -1).any(1))
        if zs.size:
            out[o] = (int(zs[0]), int(zs[-1]))
    return out


def slice_batch(image: torch.Tensor, prompts: dict[int, dict], obj_ids: list[int]) -> ImageBatch:
    """An :class:`ImageBatch` of one slice ``image [3,S,S]`` and the objects ``{object index: prompt}``."""
    S = image.shape[-1]
    objs = sorted(prompts)
    n = len(objs)
    P = max([len(prompts[o].get("point_labels", [])) for o in objs] + [0])
    boxes, points = torch.zeros(n, 4), torch.zeros(n, P, 2)
    labels = torch.full((n, P), -1, dtype=torch.long)
    masks = torch.zeros(n, S, S)
    for k, o in enumerate(objs):
        p = prompts[o]
        boxes[k] = torch.as_tensor(np.asarray(p.get("box", np.zeros(4)), np.float32))
        m = len(p.get("point_labels", []))
        if m:
            points[k, :m] = torch.as_tensor(np.asarray(p["points"], np.float32))
            labels[k, :m] = torch.as_tensor(np.asarray(p["point_labels"]))
        if p.get("mask_prompt") is not None:
            masks[k] = torch.as_tensor(np.asarray(p["mask_prompt"], np.float32))
    return ImageBatch(
        images=image[None], masks=torch.zeros(n, S, S, dtype=torch.bool),
        obj_img=torch.zeros(n, dtype=torch.long), obj_class=torch.tensor([obj_ids[o] for o in objs]),
        boxes=boxes, points=points, point_labels=labels, mask_prompts=masks, case_ids=["slice"],
        spacing=torch.ones(1, 2),
    )  # fmt: skip


@torch.no_grad()
def segment_slices(
    predict: Callable[[ImageBatch], torch.Tensor],
    images: torch.Tensor,
    vp: VolumePrompts,
    out_hw: tuple[int, int],
    *,
    threshold: float = 0.0,
) -> np.ndarray:
    """Labels ``(D,H,W)`` int64: each slice of ``images [D,3,S,S]`` segmented by ``predict`` (per-object
    logits ``[N,S,S]`` of an :class:`ImageBatch`) for the objects prompted on it; logits resized to
    ``out_hw`` (bilinear); a voxel takes the object with the highest logit above ``threshold``."""
    D = images.shape[0]
    out = np.zeros((D, *out_hw), dtype=np.int64)
    device = images.device
    for z in range(D):
        on = {o: per_z[z] for o, per_z in vp.per_object.items() if z in per_z and not per_z[z].get("empty")}
        if not on:
            continue
        batch = slice_batch(images[z].cpu(), on, vp.obj_ids).to(device)
        logits = predict(batch).float()
        up = F.interpolate(logits[:, None], size=tuple(out_hw), mode="bilinear", align_corners=False)[:, 0]
        best, arg = up.max(0)
        ids = batch.obj_class.to(arg.device)
        out[z] = torch.where(best > threshold, ids[arg], torch.zeros_like(arg)).cpu().numpy()
    return out
