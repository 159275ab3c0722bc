"""Dataset integrity check (like nnU-Net's verify_dataset_integrity), numpy only.

Checks every case and reports EVERY problem, each message starting with the offending file:
files readable, image/label shapes and geometry match, labels hold only declared ids, no NaN/inf,
labels not empty. ``fast=True`` reads headers only (shape and geometry of every file) plus the full
check of the first labelled case (the cheap label check); training runs it before step 1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.errors import DataError
from medseg.io import ITK_EXT, NIFTI_EXT, geometry_mismatch, read_header, suffix_of

_GEOMETRY_EXT = NIFTI_EXT + ITK_EXT


def _full_check(dataset, case_id: str, files: dict[str, list[Path]]) -> tuple[list[str], bool]:
    img_f = files["image"][0] if files["image"] else case_id
    lab_f = files["label"][0] if files["label"] else None
    try:
        case = dataset.load_case(case_id, raw=True)
    except DataError as exc:
        return [str(exc)], False
    except Exception as exc:  # noqa: BLE001 - report, do not crash the whole check
        return [f"{img_f}: cannot load case '{case_id}' ({type(exc).__name__}: {exc})"], False
    problems = []
    bad = int((~np.isfinite(case["image"])).sum())
    if bad:
        problems.append(f"{img_f}: image holds {bad} NaN/inf values")
    label = case.get("label")
    if label is None:
        return problems, False
    if label.shape != case["image"].shape[:3]:
        problems.append(
            f"{lab_f}: label shape {label.shape} differs from image shape {case['image'].shape[:3]}"
        )
    ids = set(np.unique(label).tolist()) - {0}
    declared = dataset.declared_label_ids
    if declared is not None and ids - declared:
        problems.append(
            f"{lab_f}: label holds undeclared ids {sorted(ids - declared)} (declared: {sorted(declared)})"
        )
    if not ids:
        problems.append(f"{lab_f}: label is empty (no foreground voxel)")
    return problems, True


def _fast_check(files: dict[str, list[Path]]) -> list[str]:
    problems, heads = [], {}
    for f in dict.fromkeys(files["image"] + files["label"]):
        try:
            heads[f] = read_header(f)
        except DataError as exc:
            problems.append(str(exc))
    imgs, labs = files["image"], files["label"]
    if not labs or problems:
        return problems
    if len(imgs) > 1 and len(labs) != len(imgs):
        return [f"{labs[0].parent}: {len(labs)} label files for {len(imgs)} image files in {imgs[0].parent}"]
    pairs = zip(imgs, labs) if len(imgs) == len(labs) else ((imgs[0], lab) for lab in labs)
    for img, lab in pairs:
        if img == lab:
            continue
        (si, gi), (sl, gl) = heads[img], heads[lab]
        if si != sl:
            problems.append(f"{lab}: label shape {sl} differs from image shape {si} of {Path(img).name}")
        elif suffix_of(img) in _GEOMETRY_EXT and suffix_of(lab) in _GEOMETRY_EXT:
            diff = geometry_mismatch(gi, gl)
            if diff:
                problems.append(f"{lab}: geometry differs from image {Path(img).name}: {diff}")
    return problems


def verify_dataset(dataset, fast: bool = False) -> list[str]:
    """Check every case of ``dataset`` (all cases, not only a subset view).

    Args:
        dataset: a :class:`~medseg.datasets.CaseDataset` (built with ``strict=False`` to also get the
            layout problems, e.g. images without masks, collected in ``dataset.problems``).
        fast: header/shape checks for all cases, full check of the first labelled case only.

    Returns:
        One message per problem ("<file>: <what>"); empty when the dataset is clean.
    """
    problems = list(getattr(dataset, "problems", []))
    full_done = False
    for cid in dataset.all_case_ids:
        try:
            files = dataset.case_files(cid)
        except DataError as exc:
            problems.append(str(exc))
            continue
        if fast:
            found = _fast_check(files)
            problems += found
            if found or full_done or not files["label"]:
                continue
        found, labelled = _full_check(dataset, cid, files)
        problems += found
        full_done = full_done or labelled
    return problems
