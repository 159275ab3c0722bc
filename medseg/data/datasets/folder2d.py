"""Any ``images/`` + ``masks/`` pair of folders (PNG/JPEG/TIFF/NIfTI/npy), matched by file stem.

Masks are read by :func:`medseg.data.io.read_label`: L, RGB (equal channels -> grey, else the brightest
channel) or RGBA (alpha ignored), 8 or 16 bit, palette PNGs (the indices). A colour-coded class map
whose colours would merge that way (red and green objects) is one error naming the file unless
``mask_mode=binary`` (every colour = object). ``mask_mode``:

- ``binary``: object = value >= half the file's full scale (>= 1 for 0/1 masks, >= 128 for 8-bit,
  >= 32768 for 16-bit): 0/1, 0/255, 0/65535 and JPEG-noisy masks.
- ``ids``: the values are label ids; the classes are the non-zero values found in the mask folder.
- ``auto`` (default): decided once for the whole dataset (not per file) from one scan of the masks'
  values, and logged: JPEG masks -> binary (>= 128, JPEG noise); one non-zero value in every mask
  (0/1, 0/255, 0/65535, ...) -> binary (object = non-zero); several -> ids. Values of both binary scales
  (e.g. 1 in one file, 255 in another) or more than ``MAX_IDS`` distinct values (soft or anti-aliased
  masks) are undecidable: one error names a file and ``dataset.mask_mode``.

``mask_suffix`` is stripped from mask stems (e.g. ``_mask``).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np

from medseg.data.datasets.base import CaseDataset, list_files
from medseg.data.io import IMAGE_EXT, read_image, read_label, stem_of, suffix_of
from medseg.errors import DataError

log = logging.getLogger(__name__)
MASK_MODES = ("auto", "binary", "ids")
MAX_IDS = 64  # more distinct non-zero values than this is not a label-id map
BINARY_SCALES = (1, 255, 65535)
LOSSY_EXT = (".jpg", ".jpeg")


def half_scale(peak: int) -> int:
    """Binary threshold of a mask whose largest value is ``peak``: 1, 128 (8 bit) or 32768 (16 bit)."""
    return 1 if peak <= 1 else 128 if peak <= 255 else 32768


def mask_values(files: list[Path]) -> dict[int, Path]:
    """{non-zero value: first file holding it} over ``files`` (one read of each)."""
    first: dict[int, Path] = {}
    for f in files:
        m, _ = read_label(f, distinct_colours=True)  # the values may become class ids
        m = m.ravel()
        if m.size and 0 <= m.min() and m.max() < 1 << 17:
            vals = np.flatnonzero(np.bincount(m))
        else:
            vals = np.unique(m)
        for v in vals.tolist():
            if v != 0:
                first.setdefault(int(v), f)
    return first


def decide_mask_mode(files: list[Path]) -> tuple[str, int | None, list[int], str]:
    """``mask_mode=auto`` for a whole folder: (mode, binary threshold or None = per file, ids, reason).

    Raises:
        DataError: naming a file and ``dataset.mask_mode`` when the values fit neither mode.
    """
    lossy = [f for f in files if suffix_of(f) in LOSSY_EXT]
    if lossy:
        return "binary", None, [1], f"JPEG masks such as {lossy[0].name}: object = value >= 128"
    first = mask_values(files)
    vals = sorted(first)
    if len(vals) <= 1:
        what = f"values {{0, {vals[0]}}}" if vals else "every mask empty"
        return "binary", 1, [1], f"{what}: object = value > 0"
    hint = "set dataset.mask_mode=binary (object = value >= half the full scale) or dataset.mask_mode=ids"
    scales = [v for v in vals if v in BINARY_SCALES]
    if len(scales) == len(vals):
        a, b = first[scales[0]], first[scales[-1]]
        raise DataError(
            f"{b}: mask value {scales[-1]} while {a.name} has {scales[0]}: binary masks of two scales or "
            f"label ids {vals}? dataset.mask_mode=auto cannot decide; {hint}"
        )
    if len(vals) > MAX_IDS:
        worst = Counter(first.values()).most_common(1)[0][0]  # the file that brought the most values
        raise DataError(
            f"{worst}: the masks hold {len(vals)} distinct values (soft or anti-aliased masks?), too many "
            f"for label ids; dataset.mask_mode=auto cannot decide; {hint}"
        )
    return "ids", None, vals, f"values {[0, *vals]}: label ids"


class Folder2DDataset(CaseDataset):
    """Image/mask folder pairs; images are (1, H, W) grey or (1, H, W, 3) colour."""

    layout = "folder2d"

    def __init__(
        self,
        root,
        *,
        images: str = "images",
        masks: str = "masks",
        mask_mode: str = "auto",
        mask_suffix: str = "",
        foreground_name: str = "foreground",
        **kwargs,
    ):
        super().__init__(root, **kwargs)
        if mask_mode not in MASK_MODES:
            raise DataError(f"dataset.mask_mode: '{mask_mode}' is not one of {list(MASK_MODES)}")
        self.mask_mode, self.foreground_name = mask_mode, foreground_name
        img_dir, mask_dir = self.root / images, self.root / masks
        for d in (img_dir, mask_dir):
            if not d.is_dir():
                raise DataError(f"{d}: folder missing (dataset={self.layout} expects {images}/ and {masks}/)")
        image_files = list_files(img_dir, IMAGE_EXT)
        if not image_files:
            raise DataError(f"{img_dir}: no image files")
        masks_by_stem: dict[str, Path] = {}
        for m in list_files(mask_dir, IMAGE_EXT):
            stem = stem_of(m)
            if mask_suffix and stem.endswith(mask_suffix):
                stem = stem[: -len(mask_suffix)]
            masks_by_stem[stem] = m
        self._images: dict[str, Path] = {}
        self._masks: dict[str, Path] = {}
        for f in image_files:
            stem = stem_of(f)
            if stem in self._images:
                self._problem(f"{f}: two images share the stem '{stem}' ({self._images[stem].name})")
                continue
            if stem not in masks_by_stem:
                self._problem(f"{f}: no mask for this image in {mask_dir}")
                continue
            self._images[stem], self._masks[stem] = f, masks_by_stem[stem]
            self._cases.append(stem)
        for stem, m in masks_by_stem.items():
            if stem not in self._images and not any(p.startswith(f"{m}:") for p in self.problems):
                self.problems.append(f"{m}: mask without an image in {img_dir}")
        self._mode, self._threshold, ids = self._decide([self._masks[c] for c in self._cases], mask_dir)
        names = {1: foreground_name} if self._mode == "binary" else {i: f"label_{i}" for i in ids}
        self.default_label_names = names
        self._finish_listing(f"expected {images}/ and {masks}/ with matching stems")

    def _decide(self, files: list[Path], mask_dir: Path) -> tuple[str, int | None, list[int]]:
        """(mode, binary threshold or None = per file, label ids) for ``mask_mode``; auto is logged."""
        if self.mask_mode == "binary":
            return "binary", None, [1]
        try:
            if self.mask_mode == "ids":
                return "ids", None, sorted(mask_values(files))
            mode, threshold, ids, reason = decide_mask_mode(files)
        except DataError as exc:  # undecidable, or an unreadable mask
            self._problem(str(exc))  # raises unless strict=False (verification lists it)
            return "ids", None, []
        log.info("%s: dataset.mask_mode=auto -> %s (%s, %d masks)", mask_dir, mode, reason, len(files))
        return mode, threshold, ids

    def case_files(self, case_id: str) -> dict[str, list[Path]]:
        return {"image": [self._images[case_id]], "label": [self._masks[case_id]]}

    def _read_mask(self, path: Path) -> np.ndarray:
        m, _ = read_label(path, distinct_colours=self._mode == "ids")
        if self._mode == "binary":
            threshold = self._threshold or half_scale(int(m.max(initial=0)))
            return (m >= threshold).astype(np.int64)
        return m

    def _load(self, case_id: str) -> dict:
        image, geom = read_image(self._images[case_id])
        label = self._read_mask(self._masks[case_id])
        if label.shape != image.shape[:3]:
            raise DataError(
                f"{self._masks[case_id]}: mask shape {label.shape} differs from image shape "
                f"{image.shape[:3]} of {self._images[case_id].name}"
            )
        if self._mode == "binary":
            names = {1: self.foreground_name}
        else:
            names = {int(i): f"label_{int(i)}" for i in np.unique(label) if i > 0}
        return self._case(case_id, image, label, geom, names)
