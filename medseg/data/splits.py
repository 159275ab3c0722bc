"""Train/val/test splits, resolved once per run and saved to the run's ``splits.json``.

Order of precedence in :func:`resolve_splits`:
  1. ``path`` exists (resume / re-run): load it, check every id exists, never re-draw.
  2. explicit lists: ``split.file`` (JSON {"train": [...], "val": [...], "test": [...]}, or nnU-Net's
     ``splits_final.json`` list of folds with ``split.fold``), or ``split.train/val/test`` lists.
  3. the layout's native split (``split.use_native``, default true): val is carved from train with
     ``split.val_ratio`` (seeded) when the layout has none; cases without a native split are left out.
     ``split.val_from: test`` validates on the layout's test part instead (Medical-SAM2 validates on
     ``Test``): val and test are then the same cases, and train keeps every training case.
  4. seeded random ratios ``split.ratios`` ([train, val, test], sum 1) with ``split.seed``.
The result is written to ``path`` atomically. For 2D slices of volumes, resolve on the volume dataset.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from medseg.data.datasets.base import SPLITS, to_plain
from medseg.errors import DataError


def check_ratios(ratios: Any, key: str = "split.ratios") -> list[float]:
    """Three non-negative numbers summing to 1 (within 1e-6)."""
    try:
        r = [float(x) for x in ratios]
    except (TypeError, ValueError) as exc:
        raise DataError(f"{key}: expected 3 numbers [train, val, test], got {ratios!r}") from exc
    if len(r) != 3:
        raise DataError(f"{key}: expected 3 numbers [train, val, test], got {r}")
    if any(x < 0 for x in r):
        raise DataError(f"{key}: ratios must be non-negative, got {r}")
    if abs(sum(r) - 1.0) > 1e-6:
        raise DataError(f"{key}: ratios must sum to 1, got {r} (sum {sum(r):g})")
    return r


def random_split(ids: list[str], ratios: list[float], seed: int) -> dict[str, list[str]]:
    """Seeded split of ``ids`` by ``ratios``; every split with a positive ratio gets >= 1 id if possible."""
    ids = sorted(ids)
    perm = [ids[i] for i in np.random.default_rng(seed).permutation(len(ids))]
    n = len(ids)
    n_val = int(round(ratios[1] * n))
    n_test = int(round(ratios[2] * n))
    if n >= 3:
        n_val = max(n_val, 1 if ratios[1] > 0 else 0)
        n_test = max(n_test, 1 if ratios[2] > 0 else 0)
    n_train = max(n - n_val - n_test, 0)
    return {
        "train": sorted(perm[:n_train]),
        "val": sorted(perm[n_train : n_train + n_val]),
        "test": sorted(perm[n_train + n_val :]),
    }


def _check(splits: Any, known: set[str], source: str) -> dict[str, list[str]]:
    if not isinstance(splits, dict) or not set(splits) <= set(SPLITS):
        raise DataError(
            f"{source}: expected a mapping with keys train/val/test, got "
            f"{sorted(splits) if isinstance(splits, dict) else type(splits).__name__}"
        )
    out = {}
    for k in SPLITS:
        v = splits.get(k) or []
        if not isinstance(v, list) or not all(isinstance(i, str) for i in v):
            raise DataError(f"{source}: '{k}' must be a list of case id strings")
        out[k] = list(v)
    unknown = sorted({i for v in out.values() for i in v} - known)
    if unknown:
        raise DataError(
            f"{source}: unknown case ids {unknown[:5]}{' ...' if len(unknown) > 5 else ''} "
            f"({len(unknown)} not in the dataset)"
        )
    seen: dict[str, str] = {}
    for k, v in out.items():
        for i in v:
            if i in seen:
                raise DataError(f"{source}: case id '{i}' is in both '{seen[i]}' and '{k}'")
            seen[i] = k
    return out


def _load_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DataError(f"{path}: split file not found") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: split file is not valid JSON ({exc})") from exc


def save_splits(splits: dict[str, list[str]], path: str | Path) -> None:
    """Write ``splits`` as JSON atomically (temp file + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(splits, f, indent=2)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def resolve_splits(dataset: Any, split_cfg: Any, path: str | Path | None) -> dict[str, list[str]]:
    """Resolve {"train", "val", "test"} case-id lists (see module docstring) and save them to ``path``.

    Args:
        dataset: a :class:`~medseg.data.datasets.CaseDataset` (``all_case_ids``/``case_ids``, ``native_split``).
        split_cfg: ``dataset.split`` config (file, fold, train, val, test, use_native, val_ratio, ratios,
            seed) or None.
        path: the run's ``splits.json``; None to neither load nor save.
    """
    cfg = to_plain(split_cfg) or {}
    known_list = list(getattr(dataset, "all_case_ids", dataset.case_ids))
    known = set(known_list)
    if path is not None and Path(path).exists():
        return _check(_load_json(Path(path)), known, str(path))
    seed = int(cfg.get("seed", 42))
    ratios = check_ratios(cfg.get("ratios", [0.8, 0.1, 0.1]))
    if cfg.get("file"):
        data = _load_json(Path(cfg["file"]))
        if isinstance(data, list):  # nnU-Net splits_final.json: [{"train": [...], "val": [...]}, ...]
            fold = int(cfg.get("fold", 0))
            if not 0 <= fold < len(data):
                raise DataError(f"split.fold: {fold} out of range for {cfg['file']} ({len(data)} folds)")
            data = data[fold]
        splits = _check(data, known, str(cfg["file"]))
    elif any(cfg.get(k) for k in SPLITS):
        splits = _check({k: list(cfg.get(k) or []) for k in SPLITS}, known, "split.train/val/test")
    else:
        native = {i: dataset.native_split(i) for i in known_list} if cfg.get("use_native", True) else {}
        if any(v is not None for v in native.values()):
            splits = {k: sorted(i for i, v in native.items() if v == k) for k in SPLITS}
            val_from = str(cfg.get("val_from") or "train")
            if val_from not in ("train", "test"):
                raise DataError(f"split.val_from: expected train or test, got {val_from!r}")
            if val_from == "test":
                if not splits["test"]:
                    raise DataError("split.val_from=test: the layout has no test part (e.g. no Test/ folder)")
                splits["val"] = list(splits["test"])
            elif not splits["val"] and splits["train"]:
                val_ratio = float(cfg.get("val_ratio", ratios[1] / max(ratios[0] + ratios[1], 1e-9)))
                if not 0 <= val_ratio < 1:
                    raise DataError(f"split.val_ratio: must be in [0, 1), got {val_ratio}")
                carved = random_split(splits["train"], [1 - val_ratio, val_ratio, 0.0], seed)
                splits["train"], splits["val"] = carved["train"], carved["val"]
        else:
            splits = random_split(known_list, ratios, seed)
    if path is not None:
        save_splits(splits, path)
    return splits


def dataset_fingerprint(dataset: Any) -> dict:
    """``{"cases": n, "ids_sha256": <16 hex>}`` of every case id of ``dataset`` (sorted): stored in checkpoints,
    so that a split is only applied to the data it was drawn from."""
    import hashlib

    ids = sorted(getattr(dataset, "all_case_ids", dataset.case_ids))
    return {"cases": len(ids), "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]}


def check_same_data(saved: Any, current: dict, checkpoint: str | Path, root: Any) -> None:
    """Refuse a dataset whose case ids differ from the fingerprint ``saved`` in ``checkpoint`` (no check
    when the checkpoint has none).

    Raises:
        DataError: naming the checkpoint, ``dataset.root`` and both fingerprints.
    """
    if not isinstance(saved, dict) or not saved.get("ids_sha256"):
        return
    if saved["ids_sha256"] != current["ids_sha256"]:
        raise DataError(
            f"{checkpoint}: was trained on other data ({saved.get('name', 'dataset')}, {saved.get('cases')} "
            f"cases, case-id fingerprint {saved['ids_sha256']}) than dataset.root={root} ({current['cases']} "
            f"cases, fingerprint {current['ids_sha256']})"
        )


def check_split_unchanged(run_dir: str | Path, split_cfg: Any) -> None:
    """Refuse a ``dataset.split`` that differs from the one the run's ``splits.json`` was drawn with
    (as recorded in the run's ``.hydra/config.yaml``); a run folder without that record is not checked.

    Raises:
        DataError: naming the first differing ``dataset.split.<key>``, both values and the splits file.
    """
    record = Path(run_dir) / ".hydra" / "config.yaml"
    if not record.is_file():
        return
    from omegaconf import OmegaConf

    try:
        saved = OmegaConf.select(OmegaConf.load(record), "dataset.split")
    except Exception:  # noqa: BLE001 - an unreadable record cannot be compared
        return
    old, new = to_plain(saved) or {}, to_plain(split_cfg) or {}
    for key in sorted(set(old) | set(new)):
        if old.get(key) != new.get(key):
            raise DataError(
                f"dataset.split.{key}: {new.get(key)!r} differs from {old.get(key)!r}, which drew "
                f"{Path(run_dir) / 'splits.json'}; keep the run's split settings to continue it, or start "
                "a new hydra.run.dir"
            )
