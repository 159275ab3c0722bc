"""Decoded volumes kept on disk as memory-mapped ``.npy`` files (``data_cache`` in the config).

Reading a CT/MRI case means decompressing a whole ``.nii.gz`` (or hundreds of JPEG slices), seconds per
volume, while a training clip needs 8 of its slices. The first read of a case writes the decoded,
label-remapped arrays to ``<dir>/<key>/`` (image, label, meta.json); later reads memory-map them, so a
clip reads only its own slices from the page cache.

The key hashes the layout, the case id, every source file's path, size and modification time, the
label remapping, the channel and the stored dtype: editing or replacing a file, or changing
``dataset.labels``, makes a new entry (old entries are never reused; delete the folder to reclaim
space). Entries are written to temporary names and renamed, ``meta.json`` last, so concurrent readers
(DataLoader workers, DDP ranks) never see half an entry; an unreadable entry is rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from medseg.errors import DataError

log = logging.getLogger(__name__)
FORMAT = 2  # 2: geometry records spacing_known / oriented
DTYPES = ("float32", "float16")


class VolumeCache:
    """``VolumeCache(folder, dtype)``: ``load(dataset, case_id, build)`` -> the case with memory-mapped
    ``image``/``label`` arrays (``build()`` reads it from the source files when not cached)."""

    def __init__(self, folder: str | Path, dtype: str = "float32"):
        if str(dtype) not in DTYPES:
            raise DataError(f"data_cache.dtype: expected one of {DTYPES}, got {dtype!r}")
        self.folder = Path(folder).expanduser()
        self.dtype = str(dtype)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=self.folder, prefix=".probe.", delete=True)
            probe.close()
        except OSError as e:
            raise DataError(
                f"{self.folder}: data_cache.dir is not writable ({e.strerror or e}); "
                "set data_cache.dir=<writable folder> or data_cache.dir=null to read the files directly"
            ) from None

    def key(self, dataset, case_id: str) -> str:
        files = dataset.case_files(case_id)
        stamp = []
        for kind in sorted(files):
            for p in files[kind]:
                st = Path(p).stat()
                stamp.append([kind, str(Path(p).resolve()), st.st_size, st.st_mtime_ns])
        spec = {
            "format": FORMAT,
            "layout": dataset.layout,
            "case": case_id,
            "files": stamp,
            "labels": {str(k): v for k, v in (dataset.label_map or {}).items()},
            "channel": getattr(dataset, "channel", None),
            "dtype": self.dtype,
        }
        return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:20]

    def load(self, dataset, case_id: str, build) -> dict:
        entry = self.folder / self.key(dataset, case_id)
        if (entry / "meta.json").is_file():
            try:
                return self._read(entry)
            except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
                log.warning("%s: unreadable cache entry (%s); rebuilding it", entry, e)
                shutil.rmtree(entry, ignore_errors=True)
        case = build()
        try:
            self._write(entry, case)
        except OSError as e:  # a full disk must not stop training: read the files directly instead
            log.warning("%s: could not write the cache entry (%s); reading %s uncached", entry, e, case_id)
            shutil.rmtree(entry, ignore_errors=True)
        return case

    # ------------------------------------------------------------------ entries
    def _write(self, entry: Path, case: dict) -> None:
        entry.mkdir(parents=True, exist_ok=True)
        image = np.asarray(case["image"])
        arrays = {"image": image.astype(self.dtype, copy=False)}
        if case.get("label") is not None:
            lab = np.asarray(case["label"])
            small = np.uint8 if lab.min(initial=0) >= 0 and lab.max(initial=0) < 256 else np.int32
            arrays["label"] = lab.astype(small, copy=False)
        for name, arr in arrays.items():
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".npy", dir=entry)
            with os.fdopen(fd, "wb") as f:
                np.save(f, np.ascontiguousarray(arr))
            os.replace(tmp, entry / f"{name}.npy")
        geom = case.get("geometry")
        meta = {
            "format": FORMAT,
            "case_id": case.get("case_id"),
            "spacing": [float(x) for x in case.get("spacing", (1.0, 1.0, 1.0))],
            "label_names": {str(k): v for k, v in (case.get("label_names") or {}).items()},
            "label_dtype": str(np.asarray(case["label"]).dtype) if "label" in arrays else None,
            "geometry": None
            if geom is None
            else {
                "spacing": [float(x) for x in geom.spacing],
                "origin": np.asarray(geom.origin, dtype=float).tolist(),
                "direction": np.asarray(geom.direction, dtype=float).tolist(),
                "affine": np.asarray(geom.affine, dtype=float).tolist(),
                "source": str(geom.source),
                "spacing_known": bool(getattr(geom, "spacing_known", True)),
                "oriented": bool(getattr(geom, "oriented", True)),
            },
            "extra": {
                k: v
                for k, v in case.items()
                if k not in ("image", "label", "geometry", "spacing", "label_names", "case_id")
                and isinstance(v, (str, int, float, bool, type(None)))
            },
        }
        fd, tmp = tempfile.mkstemp(prefix=".meta.", suffix=".json", dir=entry)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(meta, f)
        os.replace(tmp, entry / "meta.json")

    def _read(self, entry: Path) -> dict:
        from medseg.data.io import Geometry

        meta = json.loads((entry / "meta.json").read_text(encoding="utf-8"))
        if meta.get("format") != FORMAT:
            raise ValueError(f"cache format {meta.get('format')} != {FORMAT}")
        image = np.load(entry / "image.npy", mmap_mode="r")
        label = None
        if meta.get("label_dtype"):
            label = np.load(entry / "label.npy", mmap_mode="r")
            if label.shape != image.shape[:3]:
                raise ValueError(f"label {label.shape} does not match image {image.shape}")
        g = meta.get("geometry")
        geometry = (
            None
            if g is None
            else Geometry(
                tuple(g["spacing"]),
                np.asarray(g["origin"]),
                np.asarray(g["direction"]),
                np.asarray(g["affine"]),
                g["source"],
                spacing_known=bool(g["spacing_known"]),
                oriented=bool(g["oriented"]),
            )
        )
        case = dict(meta.get("extra") or {})
        case.update(
            image=image,
            label=label,
            case_id=meta["case_id"],
            spacing=tuple(meta["spacing"]),
            label_names={int(k): v for k, v in meta["label_names"].items()},
        )
        if geometry is not None:
            case["geometry"] = geometry
        return case
