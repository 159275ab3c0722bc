"""Pictures: image | ground truth | prediction (| prompt) grids as uint8 arrays and PNG files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from medseg.eval.figures import LAYOUT_KEY, LINE_H, SEP, title_strip

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


MAX_SIDE = 512  # pictures are drawn at the image's own resolution, at most this many pixels a side
MIN_SIDE = 128  # smaller images are enlarged by an integer factor (nearest) so that titles fit
TITLES = ("image", "reference", "prediction", "prompt")


class Picture(np.ndarray):
    """A uint8 [H, W, 3] picture that remembers its panel layout (written into the PNG by save_png)."""

    layout: dict | None = None

    def __array_finalize__(self, obj):
        self.layout = getattr(obj, "layout", None)


def _resize(a: np.ndarray, hw: tuple[int, int], nearest: bool) -> np.ndarray:
    if a.shape[:2] == hw:
        return a
    mode = Image.NEAREST if nearest else Image.BILINEAR
    if a.ndim == 2:  # labels: resized as int32 images
        return np.asarray(Image.fromarray(a.astype(np.int32)).resize(hw[::-1], mode)).astype(a.dtype)
    return np.asarray(Image.fromarray(a).resize(hw[::-1], mode))


def _scale_for(h: int, w: int, max_side: int) -> float:
    side = max(h, w)
    if side > max_side:
        return max_side / side
    if side < MIN_SIDE:
        return float(-(-MIN_SIDE // side))  # ceil: an integer factor keeps pixels square and sharp
    return 1.0


def legend_strip(width: int, names: dict[int, str], ids) -> np.ndarray:
    """Colour swatch + name for each label id in ``ids`` (wrapped over as many rows as needed)."""
    items = [(int(i), str(names.get(int(i), i))) for i in sorted(set(int(x) for x in ids)) if int(i) > 0]
    im = Image.new("RGB", (width, 4 + LINE_H * max(1, len(items))), (255, 255, 255))
    d = ImageDraw.Draw(im)
    x, y = 4, 2
    for i, name in items:
        w = 14 + d.textlength(name) + 12
        if x > 4 and x + w > width:
            x, y = 4, y + LINE_H
        col = tuple(int(c) for c in PALETTE[i % len(PALETTE)])
        d.rectangle([x, y + 1, x + 9, y + 10], fill=col, outline=(0, 0, 0))
        d.text((x + 13, y), name, fill=(0, 0, 0))
        x += int(w)
    return np.asarray(im)[: y + LINE_H + 2]


def panel_grid(
    image,
    gt,
    pred,
    *,
    boxes=None,
    points=None,
    point_labels=None,
    titles: tuple[str, ...] | None = None,
    names: dict[int, str] | None = None,
    max_side: int = MAX_SIDE,
) -> Picture:
    """``image | reference | prediction`` (+ ``prompt`` when prompts are given), each panel titled.

    Drawn at the image's own resolution (``max_side`` at most; images under 128 px are enlarged by an
    integer factor); ``gt``/``pred`` label maps of another size are resized to it (nearest). boxes:
    [N,4] xyxy and points [N,P,2] xy in ``image`` pixels, point_labels [N,P] (1 pos, 0 neg, -1 pad).
    ``names`` ({label id: name}) adds a legend of the colours of the ids present. Returns a
    :class:`Picture` uint8 [H', W', 3] whose ``layout`` says where the panels are.
    """
    rgb = to_uint8_image(image)
    h0, w0 = rgb.shape[:2]
    f = _scale_for(h0, w0, max_side)
    hw = (max(1, round(h0 * f)), max(1, round(w0 * f)))
    rgb = _resize(rgb, hw, nearest=f > 1)
    gt = _resize(np.asarray(gt), hw, nearest=True) if gt is not None else None
    pred = _resize(np.asarray(pred), hw, nearest=True)
    panels = [rgb, overlay(rgb, gt) if gt is not None else rgb, overlay(rgb, pred)]
    if boxes is not None or points is not None:
        im = Image.fromarray(rgb.copy())
        d = ImageDraw.Draw(im)
        lw = max(1, round(max(hw) / 256))
        if boxes is not None:
            for b in np.asarray(boxes, dtype=float).reshape(-1, 4) * f:
                d.rectangle(
                    [float(b[0]), float(b[1]), float(b[2]), float(b[3])], outline=(255, 255, 0), width=lw
                )
        if points is not None:
            pts = np.asarray(points, dtype=float).reshape(-1, 2) * f
            lab = np.asarray(point_labels).reshape(-1) if point_labels is not None else np.ones(len(pts))
            r = 2 + lw
            for (x, y), lab_ in zip(pts, lab):
                if lab_ < 0:
                    continue
                col = (0, 255, 0) if lab_ > 0 else (255, 0, 0)
                d.ellipse([x - r, y - r, x + r, y + r], fill=col)
        panels.append(np.asarray(im))
    titles = tuple(titles or TITLES)[: len(panels)]
    sep = np.full((hw[0], SEP, 3), 255, np.uint8)
    row = panels[0]
    for p in panels[1:]:
        row = np.concatenate([row, sep, p], axis=1)
    head = title_strip([hw[1]] * len(panels), titles, SEP)
    parts = [head, row]
    if names:
        ids = np.union1d(np.unique(pred), np.unique(gt) if gt is not None else [])
        parts.append(legend_strip(row.shape[1], names, ids))
    out = np.ascontiguousarray(np.concatenate(parts, axis=0)).view(Picture)
    out.layout = {
        "top": int(head.shape[0]),
        "panel_h": hw[0],
        "panel_w": hw[1],
        "sep": SEP,
        "n": len(panels),
        "titles": list(titles),
    }
    return out


def save_png(array: np.ndarray, path: str | Path) -> Path:
    """Write ``array`` as PNG; a :class:`Picture`'s panel layout goes into a text chunk."""
    import json

    from PIL.PngImagePlugin import PngInfo

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = None
    if getattr(array, "layout", None):
        info = PngInfo()
        info.add_text(LAYOUT_KEY, json.dumps(array.layout))
    Image.fromarray(np.asarray(array)).save(path, pnginfo=info)
    return path


def picture_or_warning(make, what: str):
    """``make()`` (draw and save a picture) or, when it fails, a WARNING naming ``what`` and None: a picture
    is never the reason a validation, its metrics or the epoch's checkpoint are lost."""
    import logging

    try:
        return make()
    except Exception as e:  # noqa: BLE001 - any drawing failure; the scores do not depend on it
        logging.getLogger(__name__).warning(
            "%s: picture not drawn (%s: %s); the run goes on", what, type(e).__name__, e
        )
        return None
