"""Everything a run needs before its first step, built once from the config: output folder, device,
process group, dataset, splits (``splits.json``), transforms and sample providers.

Shared by train_2d.py, train_3d.py, inference_3d.py and the baselines; nothing here is SAM2-specific.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from medseg.data.batch import ImageBatch, collate_sam2_2d
from medseg.data.datasets import Slices2D, build_dataset
from medseg.data.datasets.slices import largest_slices
from medseg.train.distributed import export_cluster_env
from medseg.errors import DataError
from medseg.train.runtime import DistInfo, init_distributed, pick_device, seed_everything
from medseg.data.splits import check_split_unchanged, resolve_splits
from medseg.data.transforms import build_transform

log = logging.getLogger(__name__)


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
    )


@dataclass
class RunContext:
    cfg: DictConfig
    out_dir: Path
    device: torch.device
    dist: DistInfo
    dataset: object  # every case of the layout
    splits: dict[str, list[str]]
    train_cases: object = None  # CaseDataset views (2D: slices when the layout is 3D)
    val_cases: object = None
    train_samples: object = None  # provider with get(i, rng)
    val_samples: object = None
    collate: object = None
    train_transform: object = None
    val_transform: object = None
    label_names: dict[int, str] = field(default_factory=dict)
    image_size: int = 1024


def setup_runtime(cfg: DictConfig) -> tuple[torch.device, DistInfo]:
    """Device and process group, the same way under torchrun, srun (SLURM) and submitit."""
    launcher = export_cluster_env()
    if launcher != "single":
        log.info("distributed environment from %s", launcher)
    device = pick_device(str(cfg.trainer.device))
    dist_info = init_distributed(device)
    seed_everything(int(cfg.seed) + 0, bool(cfg.trainer.deterministic))
    return device, dist_info


def prepare_data(
    cfg: DictConfig,
    out_dir: Path,
    *,
    mode: str,
    device=None,
    dist_info=None,
    splits_path: Path | None = None,
    preflight: bool = False,
) -> RunContext:
    """Build dataset, splits and sample providers for ``mode`` ``"2d"`` or ``"3d"``.

    The split is drawn at the case (patient) level and saved to ``out_dir/splits.json``; when
    resuming, the splits stored in the run folder (or ``splits_path``) are reused, never re-drawn, and a
    changed ``dataset.split`` is refused (``overwrite=true`` draws them anew). ``preflight`` checks every
    case (:func:`medseg.data.verify.preflight`) before anything is written.
    """
    if device is None:
        device, dist_info = setup_runtime(cfg)
    out_dir = Path(out_dir)
    if not OmegaConf.select(cfg, "dataset.root"):
        raise ValueError("dataset.root is not set: give dataset.root=DIR (the folder of your dataset)")
    dataset = build_dataset(cfg.dataset)
    cache = cfg.get("data_cache")
    if cache and cache.get("dir") and int(cfg.dataset.get("dim", 2)) == 3:
        dataset.enable_cache(cache.dir, str(cache.get("dtype", "float32")))
        log.info("decoded volumes cached in %s", cache.dir)
    if preflight:
        from medseg.data.verify import preflight as check_every_case

        check_every_case(cfg, dataset, is_main=dist_info.is_main)
    path = splits_path or out_dir / "splits.json"
    if splits_path is None and path.exists() and dist_info.is_main:
        if cfg.get("overwrite", False):
            path.unlink()  # overwrite=true: a new run, new splits from the config
        else:
            check_split_unchanged(out_dir, cfg.dataset.get("split"))
    splits = resolve_splits(dataset, cfg.dataset.get("split"), path if dist_info.is_main else None)
    image_size = int(cfg.model.image_size)
    ctx = RunContext(
        cfg=cfg,
        out_dir=out_dir,
        device=device,
        dist=dist_info,
        dataset=dataset,
        splits=splits,
        label_names=dict(dataset.label_names),
        image_size=image_size,
    )
    aug = cfg.dataset.get("augment")
    resize = str(OmegaConf.select(cfg, "model.preprocess.resize", default="square"))  # the model's geometry
    ctx.train_transform = build_transform(cfg.dataset.intensity, image_size, aug, resize=resize)
    ctx.val_transform = build_transform(cfg.dataset.intensity, image_size, resize=resize)
    train_v = dataset.subset(splits["train"]) if splits["train"] else None
    eval_ids = splits.get(str(cfg.get("eval_split", "val"))) or []
    val_v = dataset.subset(eval_ids) if eval_ids else None
    if mode == "2d":
        if int(cfg.dataset.get("dim", 2)) == 3:  # CT/MRI volumes train in 2D as one sample per labelled slice
            n_max = cfg.dataset.get("max_slices")  # the slices with the largest labelled area, before the split
            keep = largest_slices(dataset, int(n_max)) if n_max else None
            train_v = Slices2D(train_v, keep=keep) if train_v is not None else None
            val_v = Slices2D(val_v, keep=keep) if val_v is not None else None
        ctx.train_samples = (
            ImageSamples(train_v, ctx.train_transform, augment=bool(aug)) if train_v is not None else None
        )
        ctx.val_samples = ImageSamples(val_v, ctx.val_transform, augment=False) if val_v is not None else None
        ctx.collate = functools.partial(collate_2d, prompt_cfg=cfg.prompt)
    ctx.train_cases, ctx.val_cases = train_v, val_v
    if bool(cfg.get("train", True)) and (train_v is None or len(train_v) == 0):
        raise DataError(f"{cfg.dataset.root}: the training split has no labelled cases")
    return ctx
