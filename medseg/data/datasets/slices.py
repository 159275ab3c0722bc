"""2D samples cut from a volume dataset: one sample per (labelled) axial slice."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from medseg.data.datasets.base import CaseDataset
from medseg.errors import DataError


class Slices2D:
    """``Slices2D(volume_dataset, only_labelled=True)``: one sample per slice, case id ``<case>_z<k>``.

    Splits are resolved on the volume dataset (so slices of a case never leak across splits), then the
    split's view is wrapped. The slice index is built lazily (labels are read once); the last volume
    read is cached so consecutive slices of a case cost one read.

    Each sample is the raw case dict cut to one slice: image (1, H, W) or (1, H, W, 3), label (1, H, W),
    ``case_id`` ``<case>_z<k>``, plus ``volume_id`` and ``slice_index``.
    """

    def __init__(
        self,
        volume_dataset: CaseDataset,
        only_labelled: bool = True,
        transform: Callable | None = None,
        keep: set[tuple[str, int]] | None = None,
    ):
        self.volumes = volume_dataset
        self.only_labelled = only_labelled
        self.transform = transform
        self.keep = keep  # only these (volume, z) slices (see largest_slices), None = all
        self._index: list[tuple[str, int]] | None = None
        self._cache: tuple[str, dict] | None = None

    def _volume(self, vid: str) -> dict:
        if self._cache is None or self._cache[0] != vid:
            self._cache = (vid, self.volumes.load_case(vid))
        return self._cache[1]

    @property
    def index(self) -> list[tuple[str, int]]:
        if self._index is None:
            index = []
            for vid in self.volumes.case_ids:
                case = self._volume(vid)
                depth = case["image"].shape[0]
                if case["label"] is None or not self.only_labelled:
                    index += [(vid, z) for z in range(depth)]
                else:
                    index += [(vid, int(z)) for z in np.flatnonzero(case["label"].reshape(depth, -1).any(1))]
            self._index = index if self.keep is None else [k for k in index if k in self.keep]
        return self._index

    @property
    def case_ids(self) -> list[str]:
        return [f"{v}_z{z}" for v, z in self.index]

    def native_split(self, case_id: str) -> str | None:
        return self.volumes.native_split(self._parse(case_id)[0])

    def _parse(self, case_id: str) -> tuple[str, int]:
        vid, sep, z = case_id.rpartition("_z")
        if not sep or not z.isdigit():
            raise DataError(f"{case_id}: not a slice id '<case>_z<k>'")
        return vid, int(z)

    def subset(self, ids: Iterable[str]) -> Slices2D:
        ids = list(ids)
        known = set(self.case_ids)
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise DataError(f"{self.volumes.root}: unknown slice ids {unknown[:5]}")
        view = Slices2D(self.volumes, self.only_labelled, self.transform, self.keep)
        view._index = [self._parse(i) for i in ids]
        return view

    def load_case(self, case_id: str) -> dict:
        vid, z = self._parse(case_id)
        return self._slice(vid, z)

    def _slice(self, vid: str, z: int) -> dict:
        case = self._volume(vid)
        out = dict(case)
        out["image"] = case["image"][z : z + 1]
        out["label"] = None if case["label"] is None else case["label"][z : z + 1]
        out["case_id"], out["volume_id"], out["slice_index"] = f"{vid}_z{z}", vid, z
        return out

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        vid, z = self.index[i]
        sample = self._slice(vid, z)
        return self.transform(sample) if self.transform is not None else sample

    @property
    def label_names(self) -> dict[int, str]:
        return self.volumes.label_names


def largest_slices(volumes: CaseDataset, k: int) -> set[tuple[str, int]]:
    """The ``k`` labelled slices ``(volume id, z)`` of ``volumes`` with the largest foreground area
    (``dataset.max_slices``; ties keep volume and slice order). Chosen over the whole dataset, before the
    split, so every split keeps its share."""
    if int(k) < 1:
        raise DataError(f"dataset.max_slices: expected a positive number, got {k!r}")
    areas = []
    for vid in volumes.case_ids:
        label = volumes.load_case(vid)["label"]
        if label is None:
            continue
        per_slice = (np.asarray(label).reshape(label.shape[0], -1) > 0).sum(1)
        for z in np.flatnonzero(per_slice):
            areas.append((-int(per_slice[z]), len(areas), vid, int(z)))
    areas.sort()
    return {(vid, int(z)) for _, _, vid, z in areas[: int(k)]}
