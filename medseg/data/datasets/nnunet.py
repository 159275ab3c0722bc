"""nnU-Net v2 raw datasets and Medical Segmentation Decathlon (MSD) folders.

``root`` is the folder holding ``dataset.json``.

* nnU-Net v2: ``labels`` is {name: id}, ``file_ending`` (default ``.nii.gz``),
  ``imagesTr/<case>_0000<ext>``, ``labelsTr/<case><ext>``, optional ``imagesTs/`` (and ``labelsTs/``).
* MSD: ``labels`` is {"id": name}, ``training`` is a list of {"image", "label"} paths and ``test`` a
  list of paths; 4D multi-channel images are cut at ``channel``.

Multi-channel v2 cases (``_0001``...) use ``channel`` (default 0). Image and label must have the same
shape and geometry (spacing/origin/direction within 1e-3 relative), else DataError.
Native split: imagesTr -> train, imagesTs -> test (no val: carved from train by medseg.data.splits).

Label semantics follow nnU-Net v2:

* ``"ignore": N`` (N the highest id) marks unannotated voxels. It is no class (not in ``label_names``,
  no metric); labels keep the id N (a ``dataset.labels`` remap keeps it too), every case carries
  ``ignore_label = N``, and those voxels count neither as foreground nor as background of any class:
  the losses get a ``valid`` mask (:mod:`medseg.train.losses`), the metrics leave them out
  (:func:`medseg.eval.metrics.score_case`).
* Region-based ``labels`` (``"whole tumour": [1, 2, 3]``: overlapping regions trained as sigmoid
  outputs) are refused in one line: one label map per case cannot hold overlapping classes.
"""

from __future__ import annotations

import json
from pathlib import Path

from medseg.data.datasets.base import CaseDataset
from medseg.data.io import geometry_mismatch, read_image, read_label, stem_of
from medseg.errors import DataError


class NnUNetDataset(CaseDataset):
    """nnU-Net v2 raw or MSD layout; images (D, H, W) with geometry."""

    layout = "nnunet"

    def __init__(self, root, *, channel: int = 0, **kwargs):
        super().__init__(root, **kwargs)
        self.channel = int(channel)
        js = self.root / "dataset.json"
        if not js.is_file():
            raise DataError(f"{js}: dataset.json missing (dataset.root must be the folder holding it)")
        try:
            meta = json.loads(js.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise DataError(f"{js}: not valid JSON ({exc})") from exc
        if not isinstance(meta, dict) or not isinstance(meta.get("labels"), dict):
            raise DataError(f"{js}: no 'labels' mapping")
        self.meta = meta
        self.msd = all(str(k).strip().isdigit() for k in meta["labels"]) and "training" in meta
        self.default_label_names, self.ignore_label = self._parse_labels(js, meta["labels"])
        self._files: dict[str, tuple[Path, Path | None]] = {}
        if self.msd:
            self._list_msd(js, meta)
        else:
            self._list_v2(js, meta)
        self._finish_listing("expected imagesTr/<case>_0000<ext>")
        if self.ignore_label is not None and self.label_map is not None:
            if self.ignore_label in self.label_map:
                raise DataError(
                    f"dataset.labels: new id {self.ignore_label} is the 'ignore' label of {js}; "
                    "choose other ids for the remapped classes"
                )
            self.label_map[self.ignore_label] = [self.ignore_label]  # unannotated voxels stay unannotated

    @staticmethod
    def _parse_labels(js: Path, labels: dict) -> tuple[dict[int, str], int | None]:
        """{id: name} of the classes (ids >= 1) and the id of nnU-Net's ``ignore`` label (or None)."""
        regions = sorted(str(k) for k, v in labels.items() if isinstance(v, (list, tuple)))
        if regions:
            raise DataError(
                f"{js}: region-based labels ({', '.join(repr(r) for r in regions[:3])}: lists of ids) are "
                "not supported; declare one id per class (nnU-Net's non-region labels)"
            )
        out, ignore = {}, None
        for k, v in labels.items():
            if str(k).strip().isdigit():  # MSD: {"1": "liver"}
                out[int(k)] = str(v)
            elif isinstance(v, int) or (isinstance(v, str) and v.strip().isdigit()):  # v2: {"liver": 1}
                if str(k) == "ignore":
                    ignore = int(v)
                else:
                    out[int(v)] = str(k)
            else:
                raise DataError(f"{js}: cannot read label entry {k!r}: {v!r}")
        if ignore is not None and (ignore < 1 or any(i > ignore for i in out)):
            raise DataError(
                f"{js}: the 'ignore' label ({ignore}) must have the highest id (nnU-Net v2), "
                f"got classes {sorted(i for i in out if i >= 1)}"
            )
        return {i: n for i, n in sorted(out.items()) if i >= 1}, ignore

    @property
    def declared_label_ids(self) -> set[int] | None:
        """The class ids and the ``ignore`` id a label file may hold."""
        ids = super().declared_label_ids
        return ids if ids is None or self.ignore_label is None else ids | {self.ignore_label}

    @property
    def label_names(self) -> dict[int, str]:
        """{id: name} of the classes after remapping; never the ``ignore`` label."""
        return {i: n for i, n in super().label_names.items() if i != self.ignore_label}

    def load_case(self, case_id: str, *, raw: bool = False) -> dict:
        case = super().load_case(case_id, raw=raw)
        if self.ignore_label is not None:
            case["ignore_label"] = self.ignore_label
            names = case.get("label_names") or {}
            case["label_names"] = {i: n for i, n in names.items() if int(i) != self.ignore_label}
        return case

    def _list_v2(self, js: Path, meta: dict) -> None:
        ext = meta.get("file_ending", ".nii.gz")
        tr = self.root / "imagesTr"
        if not tr.is_dir():
            raise DataError(f"{tr}: folder missing (dataset=nnunet expects imagesTr/ beside {js.name})")
        suffix = f"_{self.channel:04d}{ext}"
        for sub, lab_sub, split in (("imagesTr", "labelsTr", "train"), ("imagesTs", "labelsTs", "test")):
            folder = self.root / sub
            if not folder.is_dir():
                continue
            for f in sorted(folder.iterdir()):
                if not f.name.endswith(suffix) or f.name.startswith("."):
                    continue
                cid = f.name[: -len(suffix)]
                lab = self.root / lab_sub / f"{cid}{ext}"
                if not lab.exists():
                    if split == "train":
                        self._problem(f"{lab}: label missing for image {f}")
                        continue
                    lab = None
                self._add(cid, f, lab, split)
        if not self._cases and not self.problems:
            raise DataError(f"{tr}: no files named <case>{suffix}")

    def _list_msd(self, js: Path, meta: dict) -> None:
        entries = [
            (e.get("image"), e.get("label"), "train") if isinstance(e, dict) else (e, None, "train")
            for e in meta.get("training", [])
        ]
        entries += [
            (e.get("image") if isinstance(e, dict) else e, None, "test") for e in meta.get("test", [])
        ]
        for img, lab, split in entries:
            if not img:
                raise DataError(f"{js}: entry without 'image' in '{split}' list")
            ip = (self.root / img).resolve()
            lp = (self.root / lab).resolve() if lab else None
            if not ip.exists():
                self._problem(f"{ip}: image listed in {js.name} is missing")
                continue
            if lp is not None and not lp.exists():
                self._problem(f"{lp}: label listed in {js.name} is missing")
                continue
            self._add(stem_of(ip), ip, lp, split)

    def _add(self, cid: str, image: Path, label: Path | None, split: str) -> None:
        if cid in self._files:
            self._problem(f"{image}: duplicate case id '{cid}'")
            return
        self._cases.append(cid)
        self._files[cid] = (image, label)
        self._native[cid] = split

    def case_files(self, case_id: str) -> dict[str, list[Path]]:
        image, label = self._files[case_id]
        return {"image": [image], "label": [label] if label else []}

    def _load(self, case_id: str) -> dict:
        img_path, lab_path = self._files[case_id]
        image, geom = read_image(img_path, channel=self.channel if self.msd else None)
        label = None
        if lab_path is not None:
            label, lgeom = read_label(lab_path)
            check_pair(img_path, image.shape, geom, lab_path, label.shape, lgeom)
        return self._case(case_id, image, label, geom)


def check_pair(img_path, img_shape, img_geom, lab_path, lab_shape, lab_geom) -> None:
    """Raise DataError (naming the label file) if shapes differ or geometries differ beyond 1e-3."""
    if tuple(img_shape[:3]) != tuple(lab_shape[:3]):
        raise DataError(
            f"{lab_path}: label shape {tuple(lab_shape[:3])} differs from image shape "
            f"{tuple(img_shape[:3])} of {Path(img_path).name}"
        )
    diff = geometry_mismatch(img_geom, lab_geom)
    if diff:
        raise DataError(f"{lab_path}: geometry differs from image {Path(img_path).name}: {diff}")


__all__ = ["NnUNetDataset", "check_pair"]
