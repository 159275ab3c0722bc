"""REFUGE (fundus, optic cup and disc) as re-packaged for Medical-SAM2.

Layout::

    root/{Training-400,Validation-400,Test-400}/<name>/<name>_cropped.jpg
                                               /<name>_seg_{cup,disc}_{1..7}_cropped.jpg

Each rater mask (object bright) is binarised at 0.5 of 255 (>= 128); the ground truth is the majority
vote (mean over the raters >= 0.5). Every case needs all ``dataset.n_raters`` (7) masks of the parts its
``target`` uses: a missing one is a problem naming the case and the file (a vote over 6 raters would
differ from the published ground truth without a word). ``allow_missing_raters=true`` votes over the
raters present instead (at least one per part).
``target``: ``cup`` -> label 1 = cup; ``disc`` -> label 1 = disc; ``both`` -> 1 = disc, 2 = cup written
over it (the cup lies inside the disc, so label 1 is the rim and disc = label >= 1).
Native split from the folder name: Training -> train, Validation -> val, Test -> test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.data.datasets.base import CaseDataset
from medseg.data.io import read_image, read_label
from medseg.errors import DataError

N_RATERS = 7
TARGETS = {"cup": {1: "cup"}, "disc": {1: "disc"}, "both": {1: "disc", 2: "cup"}}


def split_from_folder(name: str) -> str | None:
    low = name.lower()
    for prefix, split in (("train", "train"), ("val", "val"), ("test", "test")):
        if low.startswith(prefix):
            return split
    return None


class RefugeDataset(CaseDataset):
    """REFUGE fundus images (1, H, W, 3) with a 7-rater majority-vote cup/disc label."""

    layout = "refuge"

    def __init__(
        self,
        root,
        *,
        target: str = "cup",
        n_raters: int = N_RATERS,
        allow_missing_raters: bool = False,
        **kwargs,
    ):
        super().__init__(root, **kwargs)
        if target not in TARGETS:
            raise DataError(f"dataset.target: '{target}' is not one of {sorted(TARGETS)}")
        self.target, self.n_raters = target, int(n_raters)
        self.allow_missing_raters = bool(allow_missing_raters)
        self.default_label_names = dict(TARGETS[target])
        self._dirs: dict[str, Path] = {}
        split_dirs = sorted(d for d in self.root.iterdir() if d.is_dir() and split_from_folder(d.name))
        if not split_dirs:
            raise DataError(f"{self.root}: no Training-400/Validation-400/Test-400 folders (dataset=refuge)")
        for sd in split_dirs:
            for case_dir in sorted(d for d in sd.iterdir() if d.is_dir()):
                name = case_dir.name
                if not (case_dir / f"{name}_cropped.jpg").is_file():
                    self._problem(f"{case_dir / f'{name}_cropped.jpg'}: image missing")
                    continue
                if not self._rater_files(case_dir, "cup") and not self._rater_files(case_dir, "disc"):
                    self._problem(
                        f"{case_dir / f'{name}_seg_cup_1_cropped.jpg'}: no rater masks for image "
                        f"{case_dir / f'{name}_cropped.jpg'}"
                    )
                    continue
                missing = [] if self.allow_missing_raters else self._missing_raters(case_dir)
                if missing:
                    self._problem(
                        f"{missing[0]}: rater mask missing for case '{name}' ({len(missing)} of "
                        f"{self.n_raters * len(self._parts())} files missing; every case needs "
                        f"dataset.n_raters={self.n_raters} raters per part, or "
                        "dataset.allow_missing_raters=true to vote over those present)"
                    )
                    continue
                self._cases.append(name)
                self._dirs[name] = case_dir
                self._native[name] = split_from_folder(sd.name)
        self._finish_listing("expected <split>/<name>/<name>_cropped.jpg")

    def _parts(self) -> list[str]:
        return ["cup", "disc"] if self.target == "both" else [self.target]

    def _missing_raters(self, case_dir: Path) -> list[Path]:
        name = case_dir.name
        files = [
            case_dir / f"{name}_seg_{part}_{i}_cropped.jpg"
            for part in self._parts()
            for i in range(1, self.n_raters + 1)
        ]
        return [f for f in files if not f.is_file()]

    def _rater_files(self, case_dir: Path, part: str) -> list[Path]:
        name = case_dir.name
        files = [case_dir / f"{name}_seg_{part}_{i}_cropped.jpg" for i in range(1, self.n_raters + 1)]
        return [f for f in files if f.is_file()]

    def case_files(self, case_id: str) -> dict[str, list[Path]]:
        d = self._dirs[case_id]
        parts = ["cup", "disc"] if self.target == "both" else [self.target]
        return {
            "image": [d / f"{case_id}_cropped.jpg"],
            "label": [f for p in parts for f in self._rater_files(d, p)],
        }

    def _vote(self, case_dir: Path, part: str, shape: tuple[int, int]) -> np.ndarray:
        files = self._rater_files(case_dir, part)
        if not files:
            raise DataError(
                f"{case_dir / f'{case_dir.name}_seg_{part}_1_cropped.jpg'}: no {part} rater masks"
            )
        votes = []
        for f in files:
            m, _ = read_label(f)
            if m.shape[1:] != shape:
                raise DataError(f"{f}: mask shape {m.shape[1:]} differs from image shape {shape}")
            votes.append(m[0] >= 128)
        return np.mean(votes, axis=0) >= 0.5

    def _load(self, case_id: str) -> dict:
        d = self._dirs[case_id]
        image, geom = read_image(d / f"{case_id}_cropped.jpg")
        if image.ndim == 3:
            image = np.repeat(image[..., None], 3, axis=-1)
        hw = image.shape[1:3]
        label = np.zeros((1, *hw), np.int64)
        if self.target in ("disc", "both"):
            label[0][self._vote(d, "disc", hw)] = 1
        if self.target == "cup":
            label[0][self._vote(d, "cup", hw)] = 1
        elif self.target == "both":
            label[0][self._vote(d, "cup", hw)] = 2
        return self._case(case_id, image, label, geom)
