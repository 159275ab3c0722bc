"""BTCV (abdominal CT, 13 organs) as re-packaged for Medical-SAM2.

Layout: ``root/{Training,Test}/image/<case>/<k>.jpg`` (RGB slices, channels equal: read as grey) and
``root/{Training,Test}/mask/<case>/<k>.npy`` (int organ ids 1..13), one file per axial slice; slices
are sorted by the integer ``k`` (never lexicographically). Spacing is unknown in this layout: (1, 1, 1).
The jpgs are already windowed, so use ``intensity.modality: rgb`` (/255).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.data.datasets.base import CaseDataset
from medseg.data.datasets.refuge import split_from_folder
from medseg.data.io import Geometry, read_image, read_label, stem_of
from medseg.errors import DataError

BTCV_ORGANS = (
    "spleen",
    "right kidney",
    "left kidney",
    "gallbladder",
    "esophagus",
    "liver",
    "stomach",
    "aorta",
    "inferior vena cava",
    "portal and splenic veins",
    "pancreas",
    "right adrenal gland",
    "left adrenal gland",
)


def sorted_slices(folder: Path, ext: str) -> list[Path]:
    """Files ``<k><ext>`` sorted by integer k."""
    files = [p for p in folder.iterdir() if p.name.lower().endswith(ext) and not p.name.startswith(".")]
    bad = [p for p in files if not stem_of(p).lstrip("-").isdigit()]
    if bad:
        raise DataError(f"{bad[0]}: slice file name is not an integer index")
    return sorted(files, key=lambda p: int(stem_of(p)))


class BTCVDataset(CaseDataset):
    """BTCV volumes (D, H, W) rebuilt from per-slice jpg + npy files."""

    layout = "btcv"

    def __init__(self, root, **kwargs):
        super().__init__(root, **kwargs)
        self.default_label_names = {i + 1: n for i, n in enumerate(BTCV_ORGANS)}
        self._dirs: dict[str, tuple[Path, Path | None]] = {}
        split_dirs = sorted(d for d in self.root.iterdir() if d.is_dir() and split_from_folder(d.name))
        if not split_dirs:
            raise DataError(f"{self.root}: no Training/ or Test/ folder (dataset=btcv)")
        for sd in split_dirs:
            if not (sd / "image").is_dir():
                raise DataError(f"{sd / 'image'}: folder missing (dataset=btcv)")
            for case_dir in sorted(d for d in (sd / "image").iterdir() if d.is_dir()):
                mask_dir = sd / "mask" / case_dir.name
                if not mask_dir.is_dir():
                    if split_from_folder(sd.name) != "test":
                        self._problem(f"{mask_dir}: mask folder missing for {case_dir}")
                        continue
                    mask_dir = None
                self._cases.append(case_dir.name)
                self._dirs[case_dir.name] = (case_dir, mask_dir)
                self._native[case_dir.name] = split_from_folder(sd.name)
        self._finish_listing("expected {Training,Test}/image/<case>/<k>.jpg")

    def case_files(self, case_id: str) -> dict[str, list[Path]]:
        img_dir, mask_dir = self._dirs[case_id]
        return {
            "image": sorted_slices(img_dir, ".jpg"),
            "label": sorted_slices(mask_dir, ".npy") if mask_dir else [],
        }

    def _load(self, case_id: str) -> dict:
        files = self.case_files(case_id)
        if not files["image"]:
            raise DataError(f"{self._dirs[case_id][0]}: no slices")
        slices = []
        for f in files["image"]:
            im, _ = read_image(f)
            slices.append(im[0].mean(axis=-1) if im.ndim == 4 else im[0])
            if slices[-1].shape != slices[0].shape:
                raise DataError(f"{f}: slice shape {slices[-1].shape} differs from {slices[0].shape}")
        image = np.stack(slices).astype(np.float32)
        label = None
        if self._dirs[case_id][1] is not None:
            img_k = [stem_of(f) for f in files["image"]]
            lab_k = {stem_of(f): f for f in files["label"]}
            missing = [k for k in img_k if k not in lab_k]
            if missing:
                raise DataError(
                    f"{self._dirs[case_id][1] / (missing[0] + '.npy')}: mask slice missing "
                    f"for {files['image'][img_k.index(missing[0])]}"
                )
            label = np.zeros(image.shape, np.int64)
            for z, k in enumerate(img_k):
                m, _ = read_label(lab_k[k])
                if m.shape[1:] != image.shape[1:]:
                    raise DataError(
                        f"{lab_k[k]}: mask shape {m.shape[1:]} differs from image {image.shape[1:]}"
                    )
                label[z] = m[0]
        geom = Geometry.identity(self._dirs[case_id][0])
        return self._case(case_id, image, label, geom)
