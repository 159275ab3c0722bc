"""Pictures of a report: encoded once, written beside ``report.html`` under a size budget.

A :class:`Budget` hands out bytes; every picture is encoded in memory first and written only when it fits,
so the folder never grows past ``max_mb`` (the HTML itself is small and counted too). Volumes get one
JPEG per shown slice (image | reference | prediction, each panel ``side`` px); when the whole volume does not
fit its share, every k-th slice is shown (the key slice always).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image

from medseg.eval.viz import PALETTE, overlay

SIDE = 256  # px a side of each panel of a volume slice (the report's readable size)
SEP = 4


class Budget:
    """Bytes left for the pictures of one report (``max_mb`` in MiB)."""

    def __init__(self, max_mb: float):
        if not (isinstance(max_mb, (int, float)) and max_mb > 0):
            raise ValueError(f"report.max_mb={max_mb!r} must be a number > 0")
        self.total = int(max_mb * 2**20)
        self.used = 0
        self.skipped = 0

    @property
    def left(self) -> int:
        return self.total - self.used

    def take(self, n: int) -> bool:
        """Reserve ``n`` bytes; False (and counted as skipped) when they do not fit."""
        if n > self.left:
            self.skipped += 1
            return False
        self.used += n
        return True


def encode(rgb: np.ndarray, fmt: str = "JPEG") -> bytes:
    """uint8 [H, W, 3] as JPEG (quality 85) or PNG bytes."""
    buf = io.BytesIO()
    im = Image.fromarray(np.ascontiguousarray(rgb[..., :3]).astype(np.uint8))
    im.save(buf, format=fmt, **({"quality": 85} if fmt == "JPEG" else {"optimize": True}))
    return buf.getvalue()


def fit_height(rgb: np.ndarray, height: int = SIDE, max_width: int = 1600) -> np.ndarray:
    """Scale a picture to ``height`` px (nearest when enlarging), at most ``max_width`` px wide."""
    h, w = rgb.shape[:2]
    f = min(height / h, max_width / w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    if size == (w, h):
        return rgb
    im = Image.fromarray(rgb[..., :3])
    return np.asarray(im.resize(size, Image.NEAREST if f > 1 else Image.BILINEAR))


def gray(slice_2d: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """A 2D intensity slice windowed to [lo, hi] as uint8 RGB."""
    x = (np.asarray(slice_2d, np.float32) - lo) / max(hi - lo, 1e-8)
    g = (np.clip(np.nan_to_num(x), 0, 1) * 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def _square(a: np.ndarray, side: int, nearest: bool) -> np.ndarray:
    return np.asarray(Image.fromarray(a).resize((side, side), Image.NEAREST if nearest else Image.BILINEAR))


def slice_row(image2d, ref2d, pred2d, lo: float, hi: float, side: int = SIDE) -> np.ndarray:
    """image | reference overlay | prediction overlay of one slice, each ``side`` x ``side`` px."""
    rgb = _square(gray(image2d, lo, hi), side, nearest=False)
    lab = lambda m: _square(np.asarray(m, np.uint8), side, nearest=True)  # noqa: E731
    panels = [rgb, overlay(rgb, lab(ref2d)) if ref2d is not None else rgb, overlay(rgb, lab(pred2d))]
    sep = np.full((side, SEP, 3), 255, np.uint8)
    return np.concatenate([panels[0], sep, panels[1], sep, panels[2]], axis=1)


def key_slice(ref: np.ndarray | None, pred: np.ndarray) -> int:
    """The slice with the most reference voxels (or predicted ones, without a reference)."""
    m = ref if ref is not None and np.any(ref) else pred
    return int(np.argmax((np.asarray(m) > 0).reshape(len(m), -1).sum(1)))


def volume_slices(
    image: np.ndarray,
    ref: np.ndarray | None,
    pred: np.ndarray,
    folder: Path,
    stem: str,
    budget: Budget,
    share: int,
) -> dict | None:
    """Write the slices of one volume (D, H, W) within ``share`` bytes (and the budget).

    Returns ``{"srcs": [file names], "z": [slice index of each], "key": index into srcs, "depth": D,
    "stride": k}`` or None when not even the key slice fits.
    """
    image = np.asarray(image, np.float32)
    if image.ndim == 4:  # (D, H, W, C): first channel
        image = image[..., 0]
    depth = image.shape[0]
    finite = image[np.isfinite(image)]
    lo, hi = np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0)
    key = key_slice(ref, pred)

    def enc(z: int) -> bytes:
        return encode(slice_row(image[z], None if ref is None else ref[z], pred[z], float(lo), float(hi)))

    first = enc(key)
    stride = max(1, math.ceil(depth * len(first) / max(share, 1)))
    zs = sorted(set(range(key % stride, depth, stride)) | {key})
    out: dict = {"srcs": [], "z": [], "key": 0, "depth": depth, "stride": stride}
    for z in zs:
        data = first if z == key else enc(z)
        if not budget.take(len(data)):
            if z == key:
                return None if not out["srcs"] else out
            continue
        name = f"{stem}_z{z:03d}.jpg"
        (folder / name).write_bytes(data)
        if z == key:
            out["key"] = len(out["srcs"])
        out["srcs"].append(name)
        out["z"].append(z)
    return out if out["srcs"] else None


def picture(src: Path, folder: Path, stem: str, budget: Budget, height: int = SIDE) -> str | None:
    """A picture file (a PNG grid of the run) re-encoded at ``height`` px into ``folder``; its name or None."""
    rgb = np.asarray(Image.open(src).convert("RGB"))
    data = encode(fit_height(rgb, max(height, min(rgb.shape[0], 2 * height))))
    if not budget.take(len(data)):
        return None
    name = f"{stem}.jpg"
    (folder / name).write_bytes(data)
    return name


def legend(names: dict[int, str]) -> list[dict]:
    """``[{"name", "color"}]`` of the label ids in ``names`` (the colours of :mod:`medseg.eval.viz`)."""
    out = []
    for i, n in sorted(names.items()):
        if int(i) > 0:
            r, g, b = (int(c) for c in PALETTE[int(i) % len(PALETTE)])
            out.append({"name": str(n), "color": f"#{r:02x}{g:02x}{b:02x}"})
    return out
