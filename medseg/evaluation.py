"""Validation of 2D models (SAM2 and baselines alike): prompts fixed per case, metrics per case x class,
pictures. The model-specific part is ``task.predict(model, batch) -> logits [N,S,S]`` per object.

Metrics are computed on each image's original grid (the ``S x S`` logits resized bilinearly to (H, W), as
SAM2's predictors do) with the image's own spacing; pictures are drawn at the model resolution."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from medseg.metrics import MetricAccumulator
from medseg.viz import panel_grid, save_png


def objects_to_label_map(
    logits: torch.Tensor, obj_class: torch.Tensor, size, threshold: float = 0.0
) -> torch.Tensor:
    """Per-object logits [N,S,S] of one image -> label map [S,S]; overlaps go to the highest logit."""
    out = torch.zeros(size, dtype=torch.long, device=logits.device)
    if logits.shape[0] == 0:
        return out
    best, arg = logits.max(0)
    fg = best > threshold
    out[fg] = obj_class[arg[fg]]
    return out


@torch.no_grad()
def evaluate_2d(
    task, model, ctx, *, vis_dir: Path | None = None, threshold: float = 0.0, limit: int | None = None
):
    """Score every validation image; returns (summary {"val/dice", ...}, rows, {name: image})."""
    samples = ctx.val_samples
    if samples is None or len(samples) == 0:
        return {}, [], {}
    limit = limit if limit is not None else ctx.cfg.trainer.get("limit_val_batches")
    n = len(samples) if not limit else min(len(samples), int(limit))
    acc = MetricAccumulator()
    images = {}
    n_vis = int(ctx.cfg.get("vis_max_cases", 8))
    classes = {int(k): v for k, v in ctx.label_names.items() if int(k) > 0}
    for i in tqdm(
        range(n), desc="validate", leave=False, disable=not ctx.cfg.trainer.get("progress_bar", True)
    ):
        s = samples.get(i, np.random.default_rng([int(ctx.cfg.seed), 10_000_019, i]))
        batch = ctx.collate([s]).to(ctx.device)
        size = tuple(batch.images.shape[-2:])
        lab = torch.as_tensor(s["label"]).reshape(size)
        logits = task.predict(model, batch) if batch.masks.shape[0] else batch.images.new_zeros((0, *size))
        pred = objects_to_label_map(logits.float(), batch.obj_class, size, threshold)
        if s.get("label_orig") is not None:  # score on the image's own grid, logits resized as SAM2 does
            target = np.asarray(s["label_orig"])
            hw = target.shape
            up = F.interpolate(logits.float()[None], size=hw, mode="bilinear", align_corners=False)[0]
            scored = objects_to_label_map(up, batch.obj_class, hw, threshold).cpu().numpy()
            sp = s["spacing_orig"]
        else:
            target, scored, sp = lab.cpu().numpy(), pred.cpu().numpy(), s.get("spacing", (1.0, 1.0, 1.0))
        acc.add_case(scored, target, (float(sp[-2]), float(sp[-1])), classes, case_id=str(s["case_id"]))
        if vis_dir is not None and i < n_vis:
            pt = str(ctx.cfg.prompt.get("type", "box"))
            grid = panel_grid(
                batch.images[0],
                lab.cpu().numpy(),
                pred.cpu().numpy(),
                boxes=batch.boxes.cpu().numpy() if pt == "box" else None,
                points=batch.points.cpu().numpy() if pt == "click" else None,
                point_labels=batch.point_labels.cpu().numpy() if pt == "click" else None,
            )
            save_png(grid, Path(vis_dir) / f"{s['case_id']}.png")
            if len(images) < 4:
                images[f"val_images/{s['case_id']}"] = grid
    summ = acc.summary()
    summary = {f"val/{k}": float(v) for k, v in summ.items()}
    return summary, acc.rows, images
