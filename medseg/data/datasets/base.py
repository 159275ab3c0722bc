"""Base class of every dataset layout: lists cases, loads raw case dicts, remaps labels by config.

A raw case (docs/DESIGN.md)::

    {"image": np.float32 (D,H,W) or (D,H,W,3), "label": np.int64 (D,H,W) or None,
     "case_id": str, "spacing": (sz, sy, sx), "geometry": Geometry, "label_names": {id: name},
     "spacing_unit": "mm" | "voxel"}   # "voxel" when the layout has no physical spacing (set here)

Label remapping (``dataset.labels``), applied after reading:
  * a list of old ids to keep, e.g. ``[8, 9]`` -> 8 becomes 1, 9 becomes 2, everything else 0;
  * a mapping ``{new_id: old_id or [old ids]}``, e.g. ``{1: [8, 9]}`` merges both adrenal glands.
Names follow the old ids (merged names joined with "+") unless ``dataset.label_names`` gives them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import DataError

SPLITS = ("train", "val", "test")


def to_plain(value: Any) -> Any:
    """OmegaConf containers -> plain Python (no-op for anything else)."""
    if hasattr(value, "_metadata") and hasattr(value, "_get_node"):
        from omegaconf import OmegaConf

        return OmegaConf.to_container(value, resolve=True)
    return value


def parse_label_map(labels: Any, key: str = "dataset.labels") -> dict[int, list[int]] | None:
    """``dataset.labels`` (list of kept ids, or {new: old | [old]}) -> {new_id: [old ids]}."""
    labels = to_plain(labels)
    if labels is None:
        return None
    try:
        if isinstance(labels, Mapping):
            out = {
                int(k): [int(v)] if isinstance(v, (int, str)) else [int(x) for x in v]
                for k, v in labels.items()
            }
        elif isinstance(labels, Iterable) and not isinstance(labels, str):
            out = {i + 1: [int(v)] for i, v in enumerate(labels)}
        else:
            raise TypeError
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"{key}: expected a list of ids or a mapping {{new_id: old id(s)}}, got {labels!r}"
        ) from exc
    if any(k < 1 for k in out):
        raise DataError(f"{key}: new ids must be >= 1, got {sorted(out)}")
    olds = [o for v in out.values() for o in v]
    if len(olds) != len(set(olds)):
        raise DataError(f"{key}: an old id is mapped twice in {labels!r}")
    return out


class CaseDataset:
    """Cases of one on-disk layout; map-style (``len``, ``[i]``) over the selected cases.

    Subclasses set ``self._cases`` (ordered case ids), ``self._native`` ({case_id: split or None}),
    ``self.default_label_names`` and implement :meth:`_load` (raw ids) and :meth:`case_files`.

    Args:
        root: dataset folder (``dataset.root``).
        labels: optional label subset / remap (see module docstring).
        label_names: optional {id: name} for the ids after remapping.
        intensity: intensity config, kept for :func:`medseg.data.transforms.build_transform`.
        split: split config, kept for :func:`medseg.data.splits.resolve_splits`.
        strict: if False, layout problems (e.g. an image without a mask) are collected in
            ``self.problems`` and the case dropped instead of raising (used by verification).
        transform: optional callable applied to each raw case in ``__getitem__``.
        name, dim: informative (config name, 2 or 3).
        augment: training augmentation config, kept for :func:`medseg.data.transforms.build_transform`.
        min_size: the smallest height/width in pixels an image may have (default 8; a 1 x 1 px image would
            be upsampled to the model's size and scored as if it were an image); checked by the pre-flight.
    """

    layout = "base"

    def __init__(
        self,
        root: str | Path,
        *,
        labels: Any = None,
        label_names: Any = None,
        intensity: Any = None,
        split: Any = None,
        strict: bool = True,
        transform: Callable | None = None,
        name: str | None = None,
        dim: int | None = None,
        augment: Any = None,
        max_slices: int | None = None,
        min_size: int = 8,
    ):
        if root is None or str(root) in ("", "???"):
            raise DataError("dataset.root: not set; pass dataset.root=/path/to/data")
        self.root = Path(root).expanduser()
        if not self.root.is_dir():
            raise DataError(f"{self.root}: dataset.root is not a folder")
        self.name = name or self.layout
        self.dim = dim
        self.intensity = to_plain(intensity) or {}
        self.split_cfg = to_plain(split) or {}
        self.augment_cfg = to_plain(augment)
        if max_slices is not None and int(max_slices) < 1:
            raise DataError(f"dataset.max_slices: expected a positive number or null, got {max_slices!r}")
        self.max_slices = None if max_slices is None else int(max_slices)  # 2D cut of 3D layouts (Slices2D)
        if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1:
            raise DataError(f"dataset.min_size: expected an integer >= 1, got {min_size!r}")
        self.min_size = min_size  # smallest image side (px) the pre-flight accepts (medseg.data.verify)
        self.strict = strict
        self.transform = transform
        self.label_map = parse_label_map(labels)
        self._label_names_cfg = {int(k): str(v) for k, v in (to_plain(label_names) or {}).items()}
        self.problems: list[str] = []
        self._cases: list[str] = []
        self._native: dict[str, str | None] = {}
        self._selected: list[str] | None = None
        self.default_label_names: dict[int, str] = {}
        self.cache = None  # medseg.data.cache.VolumeCache, set by enable_cache

    # ---------------------------------------------------------------- subclass helpers
    def _problem(self, message: str) -> None:
        """Raise (strict) or record a layout problem."""
        if self.strict:
            raise DataError(message)
        self.problems.append(message)

    def _finish_listing(self, what: str) -> None:
        if not self._cases and not self.problems:
            raise DataError(f"{self.root}: no cases found ({what})")
        if len(set(self._cases)) != len(self._cases):
            dup = sorted({c for c in self._cases if self._cases.count(c) > 1})
            raise DataError(f"{self.root}: duplicate case ids {dup[:5]}")
        if self.label_map is not None and self.default_label_names:
            unknown = sorted({o for v in self.label_map.values() for o in v} - set(self.default_label_names))
            if unknown:
                raise DataError(
                    f"dataset.labels: ids {unknown} are not labels of {self.root} "
                    f"(known: {sorted(self.default_label_names)})"
                )

    def _case(self, case_id: str, image, label, geom, label_names: dict | None = None) -> dict:
        """The raw case dict every layout's ``_load`` returns (spacing from ``geom``; ``label_names``
        None: the layout's declared names)."""
        names = dict(self.default_label_names) if label_names is None else label_names
        return {
            "image": image,
            "label": label,
            "case_id": case_id,
            "spacing": geom.spacing,
            "geometry": geom,
            "label_names": names,
        }

    def _load(self, case_id: str) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    def case_files(self, case_id: str) -> dict[str, list[Path]]:  # pragma: no cover - abstract
        """{"image": [files], "label": [files]} of a case (for verification messages)."""
        raise NotImplementedError

    # ---------------------------------------------------------------- public API
    @property
    def case_ids(self) -> list[str]:
        """Currently selected case ids (all cases unless :meth:`subset` was used)."""
        return list(self._cases if self._selected is None else self._selected)

    @property
    def all_case_ids(self) -> list[str]:
        return list(self._cases)

    def native_split(self, case_id: str) -> str | None:
        """ "train" | "val" | "test" from the layout itself, or None."""
        self._check_ids([case_id])
        return self._native.get(case_id)

    @property
    def declared_label_ids(self) -> set[int] | None:
        """Label ids (>= 1) the raw files may hold, or None when the layout does not declare them."""
        return set(self.default_label_names) if self.default_label_names else None

    @property
    def label_names(self) -> dict[int, str]:
        """{id: name} after remapping (ids >= 1)."""
        base = dict(self.default_label_names)
        if self.label_map is not None:
            base = {
                new: "+".join(base.get(o, f"label_{o}") for o in olds) for new, olds in self.label_map.items()
            }
        base.update(self._label_names_cfg)
        return base

    def enable_cache(self, folder: str | Path, dtype: str = "float32") -> None:
        """Keep decoded cases as memory-mapped ``.npy`` files in ``folder`` (see :mod:`medseg.data.cache`)."""
        from medseg.data.cache import VolumeCache

        self.cache = VolumeCache(folder, dtype)

    def load_case(self, case_id: str, *, raw: bool = False) -> dict:
        """Read one case (raw dict, see module docstring); ``raw=True`` skips the label remapping and
        the cache. With :meth:`enable_cache` the arrays are memory-mapped from the cache."""
        self._check_ids([case_id])
        if self.cache is not None and not raw:
            return self.cache.load(self, case_id, lambda: self._read_case(case_id))
        return self._read_case(case_id, raw=raw)

    def _read_case(self, case_id: str, *, raw: bool = False) -> dict:
        case = self._load(case_id)
        case.setdefault("case_id", case_id)
        # "mm" when the spacing is physical, else "voxel" (PNG/JPEG/BTCV slices): the unit of HD95
        known = getattr(case.get("geometry"), "spacing_known", True)
        case.setdefault("spacing_unit", "mm" if known else "voxel")
        if raw:
            case.setdefault("label_names", dict(self.default_label_names))
            return case
        lab = case.get("label")
        if lab is not None and self.label_map is not None:
            out = np.zeros_like(lab)
            for new, olds in self.label_map.items():
                out[np.isin(lab, olds)] = new
            case["label"] = out
        names = self.label_names
        if not names and lab is not None:
            names = case.get("label_names") or {}
            names = {int(i): names.get(int(i), f"label_{int(i)}") for i in np.unique(case["label"]) if i > 0}
        case["label_names"] = names
        return case

    def subset(self, ids: Iterable[str]) -> CaseDataset:
        """A new view over ``ids`` (same files, same config)."""
        ids = list(ids)
        self._check_ids(ids)
        view = copy.copy(self)
        view._selected = ids
        return view

    def _check_ids(self, ids: Iterable[str]) -> None:
        known = set(self._cases)
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise DataError(f"{self.root}: unknown case ids {unknown[:5]}")

    def __len__(self) -> int:
        return len(self.case_ids)

    def __getitem__(self, index: int) -> dict:
        ids = self.case_ids
        if not -len(ids) <= index < len(ids):
            raise IndexError(index)
        case = self.load_case(ids[index])
        return self.transform(case) if self.transform is not None else case

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, cases={len(self)})"


def list_files(folder: Path, exts: Iterable[str]) -> list[Path]:
    """Files in ``folder`` with one of ``exts`` (lower-case, '.nii.gz' aware), sorted, hidden ones skipped."""
    from medseg.data.io import suffix_of

    exts = tuple(exts)
    return sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and suffix_of(p) in exts
    )
