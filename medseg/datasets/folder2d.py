"""Any ``images/`` + ``masks/`` pair of folders (PNG/JPEG/TIFF/NIfTI/npy), matched by file stem.

``mask_mode``: ``binary`` (object = value >= 128 when the mask max is > 1, else >= 1: handles 0/255,
noisy JPEG and 0/1 masks), ``ids`` (values are label ids), ``auto`` (JPEG -> binary; values within
{0, 255} -> binary; otherwise ids). ``mask_suffix`` is stripped from mask stems (e.g. ``_mask``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.datasets.base import CaseDataset, list_files
from medseg.errors import DataError
from medseg.io import IMAGE_EXT, read_image, read_label, stem_of, suffix_of

MASK_MODES = ("auto", "binary", "ids")


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
        binary = mask_mode == "binary"
        self.default_label_names = {1: foreground_name} if binary else {}
        self._finish_listing(f"expected {images}/ and {masks}/ with matching stems")

    def case_files(self, case_id: str) -> dict[str, list[Path]]:
        return {"image": [self._images[case_id]], "label": [self._masks[case_id]]}

    def _read_mask(self, path: Path) -> tuple[np.ndarray, str]:
        m, _ = read_label(path)
        mode = self.mask_mode
        if mode == "auto":
            jpeg = suffix_of(path) in (".jpg", ".jpeg")
            mode = "binary" if jpeg or set(np.unique(m).tolist()) <= {0, 255} else "ids"
        if mode == "binary":
            return (m >= (128 if m.max() > 1 else 1)).astype(np.int64), mode
        return m, mode

    def _load(self, case_id: str) -> dict:
        image, geom = read_image(self._images[case_id])
        label, mode = self._read_mask(self._masks[case_id])
        if label.shape != image.shape[:3]:
            raise DataError(
                f"{self._masks[case_id]}: mask shape {label.shape} differs from image shape "
                f"{image.shape[:3]} of {self._images[case_id].name}"
            )
        if mode == "binary":
            names = {1: self.foreground_name}
        else:
            names = {int(i): f"label_{int(i)}" for i in np.unique(label) if i > 0}
        return {
            "image": image,
            "label": label,
            "case_id": case_id,
            "spacing": geom.spacing,
            "geometry": geom,
            "label_names": names,
        }
