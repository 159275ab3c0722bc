"""Which weights a model starts from: ``model.checkpoint`` resolved to a file, or random init, and recorded.

Conventions shared by every model family (SAM2, SAM/MedSAM, baselines):

- ``model.checkpoint: auto`` (the SAM2 default) means the published file of the chosen variant,
  ``model.default_checkpoint`` (under ``paths.checkpoint_dir``). A missing file is one error that names
  it and says how to get it (``checkpoints/download_ckpts.sh <family>``) or how to opt out.
- ``model.checkpoint: null`` means random initialisation: allowed (tests, scratch baselines), logged as a
  WARNING and recorded as ``"random"``; never silent.
- ``model.checkpoint: PATH`` must exist.

Every run records where its weights came from in ``run_summary.json`` under ``weights``
(:func:`weights_record`): ``{"source": PATH | "random", "sha256": ..., "bytes": ...}``.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

log = logging.getLogger(__name__)

AUTO = "auto"
RANDOM = "random"


def is_unset(value) -> bool:
    """True for ``None`` / ``null`` / ``none`` / empty: random initialisation."""
    return value is None or str(value).strip().lower() in ("", "null", "none")


def resolve_checkpoint(
    checkpoint,
    *,
    default: str | Path | None = None,
    hint: str | None = None,
    key: str = "model.checkpoint",
    what: str = "model",
) -> Path | None:
    """The weights file named by ``checkpoint`` (``auto`` -> ``default``), or None for random init.

    Raises:
        FileNotFoundError: the file (or the ``auto`` default) does not exist; the message names it and
            says how to get it or how to ask for random weights.
        ValueError: ``auto`` for a model that has no published default file.
    """
    if is_unset(checkpoint):
        log.warning(
            "%s=null: %s starts from RANDOM weights (no pretrained file); recorded as 'random' in "
            "run_summary.json",
            key,
            what,
        )
        return None
    if str(checkpoint).strip() == AUTO:
        if is_unset(default):
            raise ValueError(
                f"{key}=auto: {what} has no published weights file; give {key}=PATH or {key}=null (random init)"
            )
        path = Path(str(default))
        if not path.is_file():
            get = f"download it with `{hint}`, " if hint else ""
            raise FileNotFoundError(
                f"{key}=auto: {path} not found; {get}or give {key}=PATH, or {key}=null for random weights"
            )
        log.info("%s=auto -> %s", key, path)
        return path
    path = Path(str(checkpoint))
    if not path.is_file():
        raise FileNotFoundError(f"{key}={path}: file not found")
    return path


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def weights_record(path: str | Path | None, **extra) -> dict:
    """``{"source": absolute path | "random", "sha256": hex | None, "bytes": int | None, **extra}``."""
    if path is None:
        return {"source": RANDOM, "sha256": None, "bytes": None, **extra}
    p = Path(path)
    return {"source": str(p.resolve()), "sha256": sha256_file(p), "bytes": p.stat().st_size, **extra}


def describe(record: dict | None) -> str:
    """Short text for tables: ``random``, or ``<file name> (sha256 1234abcd)``."""
    if not record:
        return "unknown"
    if record.get("source") == RANDOM:
        enc = record.get("encoder")
        return "random" + (f" + encoder {describe(enc)}" if isinstance(enc, dict) else "")
    sha = record.get("sha256") or ""
    return f"{Path(str(record.get('source'))).name} (sha256 {sha[:8]})"
