"""Everything a run needs before its first step, built once from the config: output folder, device,
process group, dataset, splits (``splits.json``), transforms and sample providers.

Shared by train_2d.py, train_3d.py, inference_3d.py and the baselines; nothing here is SAM2-specific.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from medseg.data.datasets import Slices2D, build_dataset
from medseg.data.datasets.slices import largest_slices
from medseg.data.samples import ImageSamples, RunContext, collate_2d
from medseg.data.splits import check_split_unchanged, resolve_splits
from medseg.data.transforms import build_transform
from medseg.errors import DataError
from medseg.train.distributed import export_cluster_env
from medseg.train.runtime import DistInfo, init_distributed, pick_device, seed_everything

log = logging.getLogger(__name__)


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
    cache = cfg.data_cache
    if cache.dir and int(cfg.dataset.get("dim", 2)) == 3:
        dataset.enable_cache(cache.dir, str(cache.dtype))
        log.info("decoded volumes cached in %s", cache.dir)
    if preflight:
        from medseg.data.verify import preflight as check_every_case

        check_every_case(cfg, dataset, is_main=dist_info.is_main)
    path = splits_path or out_dir / "splits.json"
    if splits_path is None and path.exists() and dist_info.is_main:
        if cfg.overwrite:
            path.unlink()  # overwrite=true: a new run, new splits from the config
        else:
            check_split_unchanged(out_dir, cfg.dataset.get("split"))
    splits = resolve_splits(dataset, cfg.dataset.get("split"), path if dist_info.is_main else None)
    image_size = int(cfg.model.image_size)
    ctx = RunContext(
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
    eval_ids = splits.get(str(cfg.eval_split)) or []
    val_v = dataset.subset(eval_ids) if eval_ids else None
    test_ids = splits.get("test") or [] if cfg.test_after_training else []
    test_v = dataset.subset(test_ids) if test_ids else None
    if mode == "2d":
        if int(cfg.dataset.get("dim", 2)) == 3:  # CT/MRI volumes train in 2D as one sample per labelled slice
            n_max = cfg.dataset.get(
                "max_slices"
            )  # the slices with the largest labelled area, before the split
            keep = largest_slices(dataset, int(n_max)) if n_max else None
            train_v = Slices2D(train_v, keep=keep) if train_v is not None else None
            val_v = Slices2D(val_v, keep=keep) if val_v is not None else None
            test_v = Slices2D(test_v, keep=keep) if test_v is not None else None
        ctx.train_samples = (
            ImageSamples(train_v, ctx.train_transform, augment=bool(aug)) if train_v is not None else None
        )
        ctx.val_samples = ImageSamples(val_v, ctx.val_transform, augment=False) if val_v is not None else None
        ctx.test_samples = (
            ImageSamples(test_v, ctx.val_transform, augment=False) if test_v is not None else None
        )
        ctx.collate = functools.partial(collate_2d, prompt_cfg=cfg.prompt)
    ctx.train_cases, ctx.val_cases, ctx.test_cases = train_v, val_v, test_v
    if cfg.train and (train_v is None or len(train_v) == 0):
        raise DataError(f"{cfg.dataset.root}: the training split has no labelled cases")
    return ctx
