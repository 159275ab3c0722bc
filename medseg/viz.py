"""Pictures: image | ground truth | prediction (| prompt) grids as uint8 arrays and PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406])
IMAGENET_STD = np.array([0.229, 0.224, 0.225])

PALETTE = np.array(
    [
        [0, 0, 0],
        [230, 25, 75],
        [60, 180, 75],
        [255, 225, 25],
        [0, 130, 200],
        [245, 130, 48],
        [145, 30, 180],
        [70, 240, 240],
        [240, 50, 230],
        [210, 245, 60],
        [250, 190, 212],
        [0, 128, 128],
        [220, 190, 255],
        [170, 110, 40],
        [255, 250, 200],
        [128, 0, 0],
        [170, 255, 195],
    ],
    dtype=np.uint8,
)


def to_uint8_image(image) -> np.ndarray:
    """ImageNet-normalised [3,H,W] tensor/array (or [H,W] in [0,1]) -> uint8 [H,W,3]."""
    x = image.detach().float().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image, float)
    if x.ndim == 3 and x.shape[0] == 3:
        x = x.transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN
    elif x.ndim == 2:
        lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
        x = np.repeat(((x - lo) / (hi - lo + 1e-8))[..., None], 3, axis=2)
    return (np.clip(x, 0, 1) * 255).astype(np.uint8)


def overlay(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    labels = np.asarray(labels).astype(np.int64)
    color = PALETTE[labels % len(PALETTE)]
    out = rgb.astype(np.float32).copy()
    m = labels > 0
    out[m] = (1 - alpha) * out[m] + alpha * color[m]
    return out.astype(np.uint8)


def panel_grid(image, gt, pred, *, boxes=None, points=None, point_labels=None, titles=True) -> np.ndarray:
    """``image | ground truth | prediction`` (+ ``prompt`` panel when prompts are given) as uint8 [H, k*W, 3].

    boxes: [N,4] xyxy; points: [N,P,2] xy with point_labels [N,P] (1 pos, 0 neg, -1 pad).
    """
    rgb = to_uint8_image(image)
    panels = [rgb, overlay(rgb, gt) if gt is not None else rgb, overlay(rgb, pred)]
    if boxes is not None or points is not None:
        im = Image.fromarray(rgb.copy())
        d = ImageDraw.Draw(im)
        if boxes is not None:
            for b in np.asarray(boxes, dtype=float).reshape(-1, 4):
                d.rectangle([float(b[0]), float(b[1]), float(b[2]), float(b[3])], outline=(255, 255, 0))
        if points is not None:
            pts = np.asarray(points, dtype=float).reshape(-1, 2)
            lab = np.asarray(point_labels).reshape(-1) if point_labels is not None else np.ones(len(pts))
            for (x, y), lab_ in zip(pts, lab):
                if lab_ < 0:
                    continue
                col = (0, 255, 0) if lab_ > 0 else (255, 0, 0)
                d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=col)
        panels.append(np.asarray(im))
    sep = np.full((rgb.shape[0], 2, 3), 255, np.uint8)
    out = panels[0]
    for p in panels[1:]:
        out = np.concatenate([out, sep, p], axis=1)
    return out


def save_png(array: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path
