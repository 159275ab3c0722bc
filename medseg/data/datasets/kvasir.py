"""Kvasir-SEG (colonoscopy polyps).

Layout: ``root/images/*.jpg`` and ``root/masks/*.jpg`` matched by stem (JPEG masks are not exactly
0/255: thresholded at 128). Optional ``train.txt`` / ``val.txt`` / ``test.txt`` (one image stem per
line) give native splits; optional ``kavsir_bboxes.json`` (sic) is exposed as ``self.bboxes``.
"""

from __future__ import annotations

import json

from medseg.data.datasets.folder2d import Folder2DDataset
from medseg.data.io import stem_of
from medseg.errors import DataError


class KvasirDataset(Folder2DDataset):
    """Kvasir-SEG: RGB images (1, H, W, 3), binary polyp label (1 = polyp)."""

    layout = "kvasir"

    def __init__(self, root, **kwargs):
        kwargs.setdefault("mask_mode", "binary")
        kwargs.setdefault("foreground_name", "polyp")
        super().__init__(root, **kwargs)
        for split in ("train", "val", "test"):
            f = self.root / f"{split}.txt"
            if not f.is_file():
                continue
            stems = [stem_of(s.strip()) for s in f.read_text(encoding="utf-8").splitlines() if s.strip()]
            unknown = [s for s in stems if s not in self._images]
            if unknown and self.strict:
                raise DataError(f"{f}: lists ids with no image in {self.root / 'images'}: {unknown[:5]}")
            for s in stems:
                if s in self._images:
                    self._native[s] = split
        self.bboxes = None
        bb = self.root / "kavsir_bboxes.json"
        if bb.is_file():
            try:
                self.bboxes = json.loads(bb.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise DataError(f"{bb}: not valid JSON ({exc})") from exc
