"""MedSAM2-style ``*.npz`` cases: ``imgs`` (D,H,W) (uint8, already windowed) and ``gts`` (D,H,W) ids,
optional ``spacing``. Files are found recursively under ``root``; the case id is the path relative to
root without ``.npz``. ``spacing_order``: ``xyz`` (as MedSAM2 stores SimpleITK's GetSpacing; default)
or ``zyx``. Sub-folders named train*/val*/test* give native splits.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.data.datasets.base import CaseDataset
from medseg.data.datasets.refuge import split_from_folder
from medseg.data.io import Geometry
from medseg.errors import DataError


class NpzDataset(CaseDataset):
    """One ``.npz`` per case."""

    layout = "npz"

    def __init__(
        self, root, *, image_key: str = "imgs", label_key: str = "gts", spacing_order: str = "xyz", **kwargs
    ):
        super().__init__(root, **kwargs)
        if spacing_order not in ("xyz", "zyx"):
            raise DataError(f"dataset.spacing_order: '{spacing_order}' is not xyz or zyx")
        self.image_key, self.label_key, self.spacing_order = image_key, label_key, spacing_order
        self._files: dict[str, Path] = {}
        for f in sorted(self.root.rglob("*.npz")):
            cid = f.relative_to(self.root).with_suffix("").as_posix()
            self._cases.append(cid)
            self._files[cid] = f
            top = f.relative_to(self.root).parts
            self._native[cid] = split_from_folder(top[0]) if len(top) > 1 else None
        self._finish_listing("expected *.npz files")

    def case_files(self, case_id: str) -> dict[str, list[Path]]:
        return {"image": [self._files[case_id]], "label": [self._files[case_id]]}

    def _load(self, case_id: str) -> dict:
        f = self._files[case_id]
        try:
            with np.load(f, allow_pickle=False) as z:
                if self.image_key not in z.files:
                    raise DataError(f"{f}: key '{self.image_key}' missing (found {z.files})")
                image = np.asarray(z[self.image_key])
                label = np.asarray(z[self.label_key]) if self.label_key in z.files else None
                known = "spacing" in z.files  # else unknown: one voxel = 1, HD95 in voxels
                spacing = tuple(float(s) for s in np.ravel(z["spacing"])) if known else (1.0,) * 3
        except DataError:
            raise
        except Exception as exc:  # noqa: BLE001 - zip / pickle / truncation errors
            raise DataError(f"{f}: not a readable npz ({type(exc).__name__}: {exc})") from exc
        if image.ndim == 2 or (
            image.ndim == 3 and image.shape[-1] == 3 and label is not None and label.ndim == 2
        ):
            image = image[None]
        if label is not None and label.ndim == 2:
            label = label[None]
        if len(spacing) == 2:
            spacing = (1.0, *spacing) if self.spacing_order == "zyx" else (*spacing, 1.0)
        if len(spacing) != 3:
            raise DataError(f"{f}: 'spacing' must hold 3 values, got {spacing}")
        spacing = spacing[::-1] if self.spacing_order == "xyz" else spacing
        if label is not None:
            if label.dtype.kind == "f":
                if not np.isfinite(label).all() or (label != np.round(label)).any():
                    raise DataError(f"{f}: '{self.label_key}' holds NaN/inf or non-integer values")
            if label.shape != image.shape[:3]:
                raise DataError(
                    f"{f}: '{self.label_key}' shape {label.shape} differs from "
                    f"'{self.image_key}' shape {image.shape[:3]}"
                )
            label = label.astype(np.int64)
        geom = Geometry.identity(f, spacing if known else None)
        return self._case(case_id, image.astype(np.float32), label, geom, {})
