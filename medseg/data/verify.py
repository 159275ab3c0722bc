"""Dataset integrity check (like nnU-Net's verify_dataset_integrity), numpy only: ONE implementation,
used by ``tools/verify_dataset.py`` and by training's pre-flight before step 1.

Checks every case and reports EVERY problem, each message starting with the offending file:
files readable, image/label shapes and geometry match (headers), labels present where the layout has
label files (e.g. an npz without ``gts``), labels hold only declared ids, no NaN/inf, labels not empty,
dimensionality (a 2D image in a ``dim: 3`` dataset), images at least ``dataset.min_size`` px a side.

Speed: the voxels of a case are read once; with the volume cache (``dataset.enable_cache``) through the
cache, and with ``memo_dir`` each case's verdict is remembered under the case's cache key (files' path,
size, mtime, label config), so a second run re-checks only changed cases. ``fast=True`` (the tool's
``fast=true``) reads headers of every case and the voxels of the first labelled case only.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from medseg.data.io import ITK_EXT, NIFTI_EXT, geometry_mismatch, read_header, suffix_of
from medseg.errors import DataError

_GEOMETRY_EXT = NIFTI_EXT + ITK_EXT
MIN_SIZE = 8  # px a side, unless the dataset says otherwise (dataset.min_size)


def _full_check(
    dataset, case_id: str, files: dict[str, list[Path]], need_foreground: bool = True
) -> tuple[list[str], bool]:
    img_f = files["image"][0] if files["image"] else case_id
    lab_f = files["label"][0] if files["label"] else None
    try:  # through the volume cache unless raw ids are needed (a label remap hides undeclared ids)
        raw = dataset.cache is None or dataset.label_map is not None
        case = dataset.load_case(case_id, raw=raw)
    except DataError as exc:
        return [str(exc)], False
    except Exception as exc:  # noqa: BLE001 - report, do not crash the whole check
        return [f"{img_f}: cannot load case '{case_id}' ({type(exc).__name__}: {exc})"], False
    problems = []
    image = np.asarray(case["image"])
    bad = int((~np.isfinite(image)).sum()) if image.dtype.kind == "f" else 0
    if bad:
        problems.append(f"{img_f}: image holds {bad} NaN/inf values")
    min_size = int(getattr(dataset, "min_size", MIN_SIZE))
    if image.ndim >= 3 and min(image.shape[1:3]) < min_size:
        problems.append(
            f"{img_f}: image is {image.shape[1]} x {image.shape[2]} px, smaller than dataset.min_size={min_size} "
            "px a side (+dataset.min_size=N to change)"
        )
    if getattr(dataset, "dim", None) == 3 and image.shape[0] == 1:
        problems.append(
            f"{img_f}: 2D image (shape {image.shape[1:3]}) in a 3D dataset (dataset.dim=3 needs volumes)"
        )
    label = case.get("label")
    if label is None:
        if lab_f is not None:
            key = getattr(dataset, "label_key", None)
            problems.append(f"{lab_f}: no label in this file" + (f" (key '{key}' missing)" if key else ""))
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
    if not ids and need_foreground:
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


VERSION = 3  # bump when the checks change: remembered verdicts of older checks are not reused


def _memo_path(memo_dir: Path, dataset, case_id: str, files: dict[str, list[Path]]) -> Path:
    stamp = [[k, str(Path(p).resolve()), *(lambda st: (st.st_size, st.st_mtime_ns))(Path(p).stat())]
             for k in sorted(files) for p in files[k]]  # fmt: skip
    spec = {
        "version": VERSION,
        "layout": dataset.layout,
        "case": case_id,
        "files": stamp,
        "labels": {str(k): v for k, v in (dataset.label_map or {}).items()},
        "declared": sorted(dataset.declared_label_ids or []),
        "dim": getattr(dataset, "dim", None),
        "channel": getattr(dataset, "channel", None),
        "label_key": getattr(dataset, "label_key", None),
        "min_size": getattr(dataset, "min_size", MIN_SIZE),
    }
    key = hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]
    return Path(memo_dir) / f"{key}.json"


def _remember(path: Path, problems: list[str], labelled: bool) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".verify.", suffix=".json", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({"problems": problems, "labelled": labelled}, f)
        os.replace(tmp, path)
    except OSError:  # a read-only cache only costs speed
        pass


def check_case(dataset, case_id: str, memo_dir: str | Path | None = None) -> tuple[list[str], bool]:
    """Every check of one case (headers first, then voxels); returns (problems, has a label)."""
    try:
        files = dataset.case_files(case_id)
    except DataError as exc:
        return [str(exc)], False
    found = _fast_check(files)
    if found:
        return found, False
    memo = None
    if memo_dir is not None:
        try:
            memo = _memo_path(Path(memo_dir), dataset, case_id, files)
            verdict = json.loads(memo.read_text(encoding="utf-8"))
            return list(verdict["problems"]), bool(verdict["labelled"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    found, labelled = _full_check(dataset, case_id, files)
    if memo is not None:
        _remember(memo, found, labelled)
    return found, labelled


def verify_dataset(dataset, fast: bool = False, memo_dir: str | Path | None = None) -> list[str]:
    """Check every case of ``dataset`` (all cases, not only a subset view).

    Args:
        dataset: a :class:`~medseg.data.datasets.CaseDataset` (built with ``strict=False`` to also get the
            layout problems, e.g. images without masks, collected in ``dataset.problems``).
        fast: header/shape checks for all cases, full check of the first labelled case only.
        memo_dir: folder where each case's verdict is remembered (training uses the volume cache's
            folder), so unchanged cases are not read again.

    Returns:
        One message per problem ("<file>: <what>"); empty when the dataset is clean.
    """
    problems = list(getattr(dataset, "problems", []))
    full_done = False
    for cid in dataset.all_case_ids:
        if fast and full_done:
            try:
                problems += _fast_check(dataset.case_files(cid))
            except DataError as exc:
                problems.append(str(exc))
            continue
        found, labelled = check_case(dataset, cid, memo_dir)
        problems += found
        full_done = full_done or labelled
    return problems


def preflight_cases(dataset, case_ids: list[str], what: str = "inference") -> None:
    """Inference's pre-flight: every check of :func:`check_case` on ``case_ids`` (labels optional, an empty
    label allowed: a case may hold no organ), before anything is written.

    Raises:
        DataError: one line with the number of problems and the first three, each naming its file.
    """
    problems = []
    for cid in case_ids:
        try:
            files = dataset.case_files(cid)
        except DataError as exc:
            problems.append(str(exc))
            continue
        found = _fast_check(files)
        problems += found or _full_check(dataset, cid, files, need_foreground=False)[0]
    if problems:
        more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
        raise DataError(f"{len(problems)} problem(s) in the {what} cases: {'; '.join(problems[:3])}{more}")


def preflight(cfg, dataset, *, is_main: bool = True) -> None:
    """Training's pre-flight: :func:`verify_dataset` over every case before step 1 (``verify_data=false``
    skips it); verdicts are remembered under ``data_cache.dir/verified``.

    Raises:
        DataError: one line with the dataset root, the number of problems and the first five.
    """
    if not cfg.verify_data or not is_main:
        return
    import logging
    import time

    cache = cfg.data_cache
    memo = Path(str(cache.dir)).expanduser() / "verified" if cache.dir else None
    start = time.perf_counter()
    problems = verify_dataset(dataset, memo_dir=memo)
    logging.getLogger(__name__).info(
        "pre-flight: %d cases checked in %.2f s", len(dataset.all_case_ids), time.perf_counter() - start
    )
    if problems:
        shown = "; ".join(problems[:5])
        more = f" (+{len(problems) - 5} more; tools/verify_dataset.py lists all)" if len(problems) > 5 else ""
        raise DataError(f"{dataset.root}: {len(problems)} problem(s) in the dataset: {shown}{more}")
