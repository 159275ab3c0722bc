"""Export medseg label maps as an Ultralytics YOLO segmentation dataset (polygon labels).

Layout written under ``out_dir``::

    images/{split}/{case_id}.png     RGB image (stored BGR by cv2, as Ultralytics reads it)
    labels/{split}/{case_id}.txt     one line per object: ``cls x1 y1 x2 y2 ...`` normalised to [0, 1]
    data.yaml                        path, train, val, names, nc, label_ids

Objects are the connected components of each class. YOLO class index ``i`` is the ``i``-th label id of
``class_names`` in ascending order (``data.yaml: label_ids``). Holes: ``cv2.findContours(RETR_CCOMP)``
gives each component's outer contour and its hole contours; every hole is joined to the polygon by a
zero-width bridge (closest pair of points, there and back), so filling the single polygon
(``cv2.fillPoly``, as Ultralytics rasterises labels) reproduces the hole.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import yaml

__all__ = ["export_yolo_dataset", "mask_to_polygons", "polygons_to_mask"]

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _bridge(poly: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Join ``hole`` (K,2) into ``poly`` (P,2) with a zero-width bridge between their closest points."""
    d = ((poly[:, None, :].astype(np.int64) - hole[None, :, :].astype(np.int64)) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmin(d)), d.shape)
    hole_loop = np.concatenate([hole[j:], hole[: j + 1]])
    return np.concatenate([poly[: i + 1], hole_loop, poly[i:]])


def mask_to_polygons(mask: np.ndarray, *, min_area: int = 1) -> list[np.ndarray]:
    """Polygons (``(P, 2)`` int arrays of ``x, y`` pixel coordinates), one per connected component.

    Args:
        mask: ``(H, W)`` bool/int mask (non-zero = object).
        min_area: components with fewer pixels are dropped.
    """
    m = (np.asarray(mask) > 0).astype(np.uint8)
    if m.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {m.shape}")
    contours, hierarchy = cv2.findContours(m, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    hierarchy = hierarchy[0]  # rows: next, prev, first_child, parent
    polys = []
    for k, cnt in enumerate(contours):
        if hierarchy[k][3] != -1:  # a hole; handled with its parent
            continue
        comp = np.zeros_like(m)
        cv2.drawContours(comp, contours, k, 1, thickness=cv2.FILLED)
        if int((comp & m).sum()) < min_area:
            continue
        poly = cnt[:, 0, :]
        child = hierarchy[k][2]
        while child != -1:
            poly = _bridge(poly, contours[child][:, 0, :])
            child = hierarchy[child][0]
        if len(poly) < 3:  # 1-2 pixel objects: repeat points so the line is a valid polygon
            poly = np.concatenate([poly] * 3)[:3]
        polys.append(poly)
    return polys


def _class_ids(class_names: Mapping[int, str] | Sequence[str]) -> dict[int, str]:
    if isinstance(class_names, Mapping):
        names = {int(k): str(v) for k, v in class_names.items() if int(k) != 0}
    else:
        names = {i + 1: str(n) for i, n in enumerate(class_names)}
    if not names:
        raise ValueError(f"class_names must name at least one foreground class, got {class_names!r}")
    return dict(sorted(names.items()))


def label_to_lines(label: np.ndarray, label_ids: Sequence[int], *, min_area: int = 1) -> list[str]:
    """YOLO polygon lines of a label map ``(H, W)``; class index = position of the id in ``label_ids``."""
    h, w = label.shape
    lines = []
    for cls, label_id in enumerate(label_ids):
        for poly in mask_to_polygons(label == label_id, min_area=min_area):
            xy = poly.astype(np.float64) / np.array([w, h], dtype=np.float64)
            coords = " ".join(f"{v:.6f}" for v in np.clip(xy, 0.0, 1.0).ravel())
            lines.append(f"{cls} {coords}")
    return lines


def polygons_to_mask(lines: Iterable[str], h: int, w: int) -> np.ndarray:
    """Rasterise YOLO polygon lines to a label map ``(h, w)`` int32: pixel = class index + 1, 0 = background.

    Lines are drawn in order (a later object overwrites an earlier one where they overlap).
    """
    out = np.zeros((int(h), int(w)), dtype=np.int32)
    for n, line in enumerate(lines):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 7 or len(parts) % 2 == 0:
            raise ValueError(f"polygon line {n} needs 'cls x1 y1 x2 y2 x3 y3 ...', got {line[:80]!r}")
        cls = int(parts[0])
        xy = np.asarray(parts[1:], dtype=np.float64).reshape(-1, 2) * np.array([w, h])
        cv2.fillPoly(out, [np.round(xy).astype(np.int32)], color=cls + 1)
    return out


def _image_bgr(image: np.ndarray, case_id: str) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8:
        raise ValueError(f"image of case {case_id!r} must be uint8, got {img.dtype}")
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    if img.ndim != 3 or img.shape[-1] not in (1, 3):
        raise ValueError(f"image of case {case_id!r} must be (H, W) or (H, W, 3), got {img.shape}")
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR)


def export_yolo_dataset(
    samples_by_split: Mapping[str, Iterable[tuple[str, np.ndarray, np.ndarray]]],
    out_dir: str | Path,
    class_names: Mapping[int, str] | Sequence[str],
    *,
    min_area: int = 1,
) -> Path:
    """Write an Ultralytics segmentation dataset and return the path of its ``data.yaml``.

    Args:
        samples_by_split: ``{"train": [(case_id, image, label), ...], "val": [...], ...}``; images are
            ``uint8 (H, W, 3)`` RGB (or ``(H, W)`` grey), labels ``int (H, W)`` label ids. ``"train"`` is
            required; without ``"val"`` the train images are used for validation.
        out_dir: output folder (created).
        class_names: ``{label_id: name}`` (background 0 ignored) or a list of names for ids 1..n.
        min_area: objects (connected components) smaller than this many pixels are not written.

    Raises:
        ValueError: missing train split, bad image/label, unknown label id, duplicate case id.
    """
    if "train" not in samples_by_split:
        raise ValueError(f"samples_by_split needs a 'train' split, got {sorted(samples_by_split)}")
    names = _class_ids(class_names)
    label_ids = list(names)
    out = Path(out_dir).resolve()
    for split, samples in samples_by_split.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+", str(split)):
            raise ValueError(f"bad split name {split!r}")
        (out / "images" / split).mkdir(parents=True, exist_ok=True)
        (out / "labels" / split).mkdir(parents=True, exist_ok=True)
        seen: set[str] = set()
        for case_id, image, label in samples:
            stem = _SAFE.sub("_", str(case_id)).strip("_") or "case"
            if stem in seen:
                raise ValueError(f"duplicate case id {case_id!r} (file stem {stem!r}) in split {split!r}")
            seen.add(stem)
            bgr = _image_bgr(image, case_id)
            lab = np.asarray(label)
            if lab.shape != bgr.shape[:2] or lab.dtype.kind not in "biu":
                raise ValueError(
                    f"label of case {case_id!r} must be int {bgr.shape[:2]}, got {lab.dtype} {lab.shape}"
                )
            unknown = sorted(set(np.unique(lab).tolist()) - set(label_ids) - {0})
            if unknown:
                raise ValueError(f"case {case_id!r} has label ids {unknown} not in class_names {names}")
            if not cv2.imwrite(str(out / "images" / split / f"{stem}.png"), bgr):
                raise OSError(f"could not write {out / 'images' / split / f'{stem}.png'}")
            lines = label_to_lines(lab, label_ids, min_area=min_area)
            (out / "labels" / split / f"{stem}.txt").write_text(
                "".join(f"{ln}\n" for ln in lines), encoding="utf-8"
            )
    data = {
        "path": str(out),
        "train": "images/train",
        "val": "images/val" if "val" in samples_by_split else "images/train",
        **({"test": "images/test"} if "test" in samples_by_split else {}),
        "nc": len(names),
        "names": {i: n for i, n in enumerate(names.values())},
        "label_ids": label_ids,
    }
    path = out / "data.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path
