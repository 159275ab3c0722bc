"""Run folders are append-only (the rules): results never replaced, a live run's lock respected, a dead
run's lock taken over. Used by the Hydra callback of the entry points (:mod:`medseg.run.rundir`) and by
``inference_3d.py`` for its ``output_dir`` (:func:`check_output_folder`)."""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import time
from pathlib import Path

log = logging.getLogger(__name__)

LOCK_NAME = ".run.lock"
RESULTS = (
    "checkpoint_last.pth",
    "checkpoint_best.pth",
    "metrics.csv",
    "val_cases.csv",
    "run_summary.json",
    "splits.json",
    "predictions",
    "tensorboard",
)
# what a fresh start would replace (splits.json and TensorBoard events alone are what a start killed before its
# first checkpoint leaves: a requeued ``trainer.resume=auto`` job starts again over them, reusing the split)
REPLACED_BY_FRESH_START = (
    "checkpoint_best.pth",
    "metrics.csv",
    "val_cases.csv",
    "run_summary.json",
    "predictions",
)


def check_not_under_file(path: str | Path, key: str) -> None:
    """Raise ``NotADirectoryError`` (one line) when ``path`` or one of its parents is a regular file."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise NotADirectoryError(f"{key}={path}: {p} is a file, not a folder")
            return


def read_lock(folder: str | Path) -> dict | None:
    """The lock of ``folder`` (``{"pid", "host", "started"}``) or None."""
    f = Path(folder) / LOCK_NAME
    try:
        return json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"pid": None, "host": None, "started": None}  # unreadable: treated as held


def lock_is_live(info: dict) -> bool:
    """Whether the process holding a lock may still run (another host's process cannot be checked, except
    that a SLURM job requeued after pre-emption has outlived the lock its earlier start left behind)."""
    job = os.environ.get("SLURM_JOB_ID")
    if job and info.get("slurm_job") == job and info.get("pid") != os.getpid():
        return False
    if info.get("host") != socket.gethostname() or not isinstance(info.get("pid"), int):
        return True
    try:
        os.kill(info["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def results_in(folder: Path) -> list[str]:
    """Names of run results present in ``folder`` (empty folders such as ``predictions/`` do not count)."""
    found = []
    for name in RESULTS:
        p = folder / name
        if p.is_file() or (p.is_dir() and any(p.iterdir())):
            found.append(name)
    return found


def check_run_folder(folder: str | Path, *, overwrite: bool = False, resume=None, key="hydra.run.dir") -> str:
    """Decide whether a run may start in ``folder``: ``"new"``, ``"resume"`` or ``"overwrite"``.

    Raises:
        NotADirectoryError: ``folder`` lies under a regular file.
        FileExistsError: ``folder`` holds a finished run or a live lock (the message says what to do).
    """
    folder = Path(folder)
    check_not_under_file(folder, key)
    if not folder.exists():
        return "new"
    lock = read_lock(folder)
    if lock is not None and lock_is_live(lock):
        raise FileExistsError(
            f"{folder}: a run is in progress there (pid {lock.get('pid')} on {lock.get('host')}, since "
            f"{lock.get('started')}; lock {folder / LOCK_NAME}); give another {key}, or delete the lock if "
            "that process is gone"
        )
    found = results_in(folder)
    if not found:
        return "new"
    last = folder / "checkpoint_last.pth"
    if str(resume) == "auto" and not last.is_file() and not overwrite:
        check_auto_resume(folder, key)
        return "new"  # only what a start killed before its first checkpoint leaves: start again
    if resume and (str(resume) == "auto" or Path(str(resume)).resolve().parent == folder.resolve()):
        return "resume"  # auto: this folder's checkpoint_last.pth (a requeued or restarted job)
    if overwrite:
        log.warning(
            "%s: overwrite=true: results of the earlier run there (%s) may be replaced", folder, found
        )
        return "overwrite"
    hint = (
        f"continue it with trainer.resume={last}, or give a new {key}"
        if last.is_file()
        else f"it has no checkpoint_last.pth to continue from: give a new {key}"
    )
    raise FileExistsError(
        f"{folder}: holds an earlier run ({', '.join(found[:3])}); {hint} (overwrite=true replaces it)"
    )


def check_auto_resume(folder: str | Path, key: str = "hydra.run.dir") -> None:
    """``trainer.resume=auto`` without a ``checkpoint_last.pth``: a fresh start is allowed only where it would
    replace no result (:data:`REPLACED_BY_FRESH_START`), e.g. the first start of a SLURM job.

    Raises:
        FileExistsError: one line naming the folder, what is there and the fix.
    """
    folder = Path(folder)
    kept = [n for n in results_in(folder) if n in REPLACED_BY_FRESH_START]
    if kept:
        raise FileExistsError(
            f"{folder}: trainer.resume=auto finds no checkpoint_last.pth to continue from, but the folder "
            f"holds results of an earlier run ({', '.join(kept[:4])}) that a fresh start would replace; give a "
            f"new {key}, or overwrite=true to replace them"
        )


def check_output_folder(folder: str | Path, *, overwrite: bool, key: str = "output_dir") -> None:
    """``inference_3d.py``'s rule: an ``output_dir`` holding any file is refused unless ``overwrite=true``."""
    folder = Path(folder)
    if folder.is_dir() and not overwrite:
        files = [p for p in folder.rglob("*") if p.is_file()]
        if files:
            raise FileExistsError(
                f"{folder}: {key} already holds {len(files)} file(s) of an earlier run (e.g. {files[0].name}); "
                f"give another {key} or overwrite=true"
            )


def contents(folder: str | Path) -> dict[str, int] | None:
    """``{relative path: size}`` of every file (folders: -1) under ``folder``, or None when it is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    return {
        str(p.relative_to(folder)): (p.stat().st_size if p.is_file() else -1)
        for p in folder.rglob("*")
        if p.name != LOCK_NAME
    }


COMMITTED = ("checkpoint_last.pth", "checkpoint_best.pth", "metrics.csv", "val_cases.csv", "run_summary.json")


def rollback_failed_start(folder: str | Path) -> bool:
    """Undo what a start that failed before its first step wrote into ``folder`` (``.hydra/``, the log,
    ``splits.json``, TensorBoard events...), using the contents its lock recorded before Hydra wrote anything;
    a folder this start created is removed. Nothing is undone when the lock is not this process's, or when
    this start already wrote a result (:data:`COMMITTED`). Files that were there keep their bytes (a log
    this start appended to is cut back to its earlier size). Returns whether anything was undone."""
    folder = Path(folder)
    info = read_lock(folder)
    if not info or info.get("pid") != os.getpid() or not isinstance(info.get("before"), dict):
        return False
    before: dict[str, int] = info["before"]
    now = contents(folder) or {}
    created = sorted((p for p in now if p not in before), key=lambda p: -p.count("/"))
    if any(p in COMMITTED for p in created):
        return False
    for rel in created:  # deepest first, so a folder is empty when its turn comes
        p = folder / rel
        if p.is_dir() and not p.is_symlink():
            with contextlib.suppress(OSError):
                p.rmdir()
        else:
            p.unlink(missing_ok=True)
    for rel, size in before.items():
        p = folder / rel
        if rel.endswith(".log") and size >= 0 and p.is_file() and p.stat().st_size > size:
            with open(p, "r+b") as f:
                f.truncate(size)
    if not info.get("existed", True):
        (folder / LOCK_NAME).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            folder.rmdir()
    log.info(
        "%s: the start failed before its first step; removed the %d entries it wrote", folder, len(created)
    )
    return True


class RunLock:
    """``.run.lock`` in a run folder while the run lives: created exclusively, removed at exit. With
    ``record=True`` it also holds the folder's contents from before this start (``before``, ``existed``),
    so that a start failing before its first step can leave the folder as it found it
    (:func:`rollback_failed_start`)."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK_NAME
        self.held = False

    def acquire(self, *, record: bool = False) -> RunLock:
        found = contents(self.path.parent) if record else None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        if record:
            info["existed"] = found is not None
            info["before"] = found or {}
        if os.environ.get("SLURM_JOB_ID"):
            info["slurm_job"] = os.environ["SLURM_JOB_ID"]
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                old = read_lock(self.path.parent)
                if old is not None and lock_is_live(old):
                    raise FileExistsError(
                        f"{self.path.parent}: a run is in progress there (pid {old.get('pid')} on "
                        f"{old.get('host')}; lock {self.path})"
                    ) from None
                log.warning(
                    "%s: stale lock of pid %s removed (that process is gone)", self.path, old.get("pid")
                )
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(info, f)
            self.held = True
            atexit.register(self.release)
            return self
        raise FileExistsError(f"{self.path}: could not take the run lock")

    def release(self) -> None:
        if self.held:
            info = read_lock(self.path.parent)
            if info is not None and info.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False
