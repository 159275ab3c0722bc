"""What a run's data looks like to the model families: 2D samples as a pure function of (seed, epoch, index),
their collate (each sample's prompts from its own seed), and :class:`RunContext`, everything a task receives
(built by :func:`medseg.run.context.prepare_data`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medseg.data.batch import ImageBatch, collate_sam2_2d


def seed_augment(transform, rng: np.random.Generator) -> None:
    """Seed the MONAI random transforms of ``transform`` from ``rng`` (data = f(seed, epoch, index))."""
    aug = getattr(transform, "augment", None)
    if aug is not None and hasattr(aug, "set_random_state"):
        aug.set_random_state(seed=int(rng.integers(2**31)))


class ImageSamples:
    """2D training/validation samples: a raw 2D case -> transformed image/label + a prompt seed.

    ``get(i, rng)`` draws augmentations and prompts from ``rng`` so a sample is a function of
    (seed, epoch, index) only.
    """

    def __init__(self, cases, transform, *, augment: bool):
        self.cases, self.transform, self.augment = cases, transform, augment

    def __len__(self) -> int:
        return len(self.cases)

    def get(self, i: int, rng: np.random.Generator | None = None) -> dict:
        rng = rng or np.random.default_rng([0, i])
        case = self.cases[i]
        if self.augment:
            seed_augment(self.transform, rng)
        s = self.transform(case)
        s["prompt_seed"] = int(rng.integers(2**31))
        if not self.augment and case.get("label") is not None:  # scoring happens on the original grid
            s["label_orig"] = np.asarray(case["label"]).reshape(np.shape(case["label"])[-2:])
            s["spacing_orig"] = tuple(float(x) for x in case.get("spacing", (1.0, 1.0, 1.0)))
            s["image_orig"] = case["image"]  # raw values, for pictures at the image's own resolution
        return s


def collate_2d(samples: list[dict], prompt_cfg) -> ImageBatch:
    """Collate with each sample's prompts drawn from its own seed, so a sample's prompts do not depend
    on which other samples share its batch (1 process x batch 2B == 2 processes x batch B)."""
    parts = [
        collate_sam2_2d([s], prompt_cfg, np.random.default_rng(s.get("prompt_seed", 0))) for s in samples
    ]
    if len(parts) == 1:
        return parts[0]
    offsets = np.cumsum([0] + [1] * (len(parts) - 1))
    n_pts = max(p.points.shape[1] for p in parts)

    def pad_points(p):
        k = n_pts - p.points.shape[1]
        return (
            torch.cat([p.points, p.points.new_zeros(p.points.shape[0], k, 2)], 1),
            torch.cat([p.point_labels, p.point_labels.new_full((p.points.shape[0], k), -1)], 1),
        )

    padded = [pad_points(p) for p in parts]
    return ImageBatch(
        images=torch.cat([p.images for p in parts]),
        masks=torch.cat([p.masks for p in parts]),
        obj_img=torch.cat([p.obj_img + int(o) for p, o in zip(parts, offsets)]),
        obj_class=torch.cat([p.obj_class for p in parts]),
        boxes=torch.cat([p.boxes for p in parts]),
        points=torch.cat([q[0] for q in padded]),
        point_labels=torch.cat([q[1] for q in padded]),
        mask_prompts=torch.cat([p.mask_prompts for p in parts]),
        case_ids=[c for p in parts for c in p.case_ids],
        spacing=torch.cat([p.spacing for p in parts]),
        valid=(
            torch.cat([p.valid if p.valid is not None else torch.ones_like(p.masks) for p in parts])
            if any(p.valid is not None for p in parts)
            else None
        ),
    )


@dataclass
class RunContext:
    """Everything a task needs, built once per run by :func:`medseg.run.context.prepare_data`."""

    out_dir: Path
    device: torch.device
    dist: Any  # medseg.train.runtime.DistInfo
    dataset: object  # every case of the layout
    splits: dict[str, list[str]]
    train_cases: object = None  # CaseDataset views (2D: slices when the layout is 3D)
    val_cases: object = None
    train_samples: object = None  # provider with get(i, rng)
    val_samples: object = None
    test_cases: object = None  # the test split, like val_cases / val_samples (``test_after_training``)
    test_samples: object = None
    collate: object = None
    train_transform: object = None
    val_transform: object = None
    label_names: dict[int, str] = field(default_factory=dict)
    image_size: int = 1024
