"""Run folders are append-only: a new run never replaces what an earlier run wrote.

Rules (checked by :class:`RunFolderCallback` before Hydra writes anything, i.e. before ``.hydra/``, the
log file or any result):

- A folder that holds results of a run (:data:`RESULTS`) is refused with one line naming it, unless
  ``trainer.resume`` points into it (the run continues) or ``overwrite=true`` is given.
- A folder locked by a live process (``.run.lock``: pid, host, start time) is refused even then; a lock
  whose process has died (same host) is stale and taken over.
- ``hydra.run.dir`` under a regular file is one line, not a ``NotADirectoryError`` traceback.
- A resumed run keeps the folder's ``.hydra/`` as it was: Hydra writes the resumed job's config to
  ``.hydra/resume_<time>/`` instead.

:func:`check_output_folder` applies the same rule to ``inference_3d.py``'s whole ``output_dir``.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

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
        return json.loads(f.read_text())
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
    if resume and (str(resume) == "auto" or Path(str(resume)).resolve().parent == folder.resolve()):
        return "resume"  # auto: this folder's checkpoint_last.pth (a requeued or restarted job)
    if overwrite:
        log.warning(
            "%s: overwrite=true: results of the earlier run there (%s) may be replaced", folder, found
        )
        return "overwrite"
    raise FileExistsError(
        f"{folder}: holds an earlier run ({', '.join(found[:3])}); continue it with "
        f"trainer.resume={folder / 'checkpoint_last.pth'}, or give a new {key} (overwrite=true replaces it)"
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


class RunLock:
    """``.run.lock`` in a run folder while the run lives: created exclusively, removed at exit."""

    def __init__(self, folder: str | Path):
        self.path = Path(folder) / LOCK_NAME
        self.held = False

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
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
            with os.fdopen(fd, "w") as f:
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


def _is_main_process() -> bool:
    """Rank 0 guards the folder (torchrun, srun or submitit: before any process group exists)."""
    from medseg.train.distributed import launcher_rank

    return launcher_rank() == 0


class RunFolderCallback(Callback):
    """Hydra callback enforcing the module's rules; refusals print ``error: ...`` and exit 1."""

    def __init__(self) -> None:
        self.lock: RunLock | None = None

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        if not _is_main_process():
            return
        from medseg.run.cli import USER_ERRORS, exit_with_error
        from medseg.run.config_check import validate_config

        try:
            validate_config(config)
            folder = Path(str(config.hydra.run.dir))
            mode = check_run_folder(
                folder,
                overwrite=bool(config.get("overwrite", False)),
                resume=OmegaConf.select(config, "trainer.resume"),
            )
            if mode == "resume" and config.hydra.output_subdir is not None and (folder / ".hydra").exists():
                with read_write(config.hydra), open_dict(config.hydra):  # keep the run's own .hydra/ intact
                    config.hydra.output_subdir = (
                        f"{config.hydra.output_subdir}/resume_{time.strftime('%Y%m%d_%H%M%S')}"
                    )
            self.lock = RunLock(folder).acquire()
        except USER_ERRORS as e:
            exit_with_error(e)

    def on_run_end(self, config: DictConfig, **kwargs) -> None:
        if self.lock is not None:
            self.lock.release()

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        if not _is_main_process():
            return
        from medseg.run.cli import USER_ERRORS, exit_with_error
        from medseg.run.config_check import validate_config

        try:
            validate_config(config)
            sweep = Path(str(config.hydra.sweep.dir))
            check_not_under_file(sweep, "hydra.sweep.dir")
            if sweep.is_dir() and not config.get("overwrite", False):
                taken = [p for p in sorted(sweep.iterdir()) if p.is_dir() and results_in(p)]
                if taken:
                    raise FileExistsError(
                        f"{sweep}: holds jobs of an earlier sweep (e.g. {taken[0].name}); give a new "
                        "hydra.sweep.dir (overwrite=true replaces them)"
                    )
        except USER_ERRORS as e:
            exit_with_error(e)

    def on_job_start(self, config: DictConfig, **kwargs) -> None:
        if self.lock is None and _is_main_process():  # a multirun job: lock its own folder
            out = OmegaConf.select(config, "hydra.runtime.output_dir")
            if out:
                from medseg.run.cli import exit_with_error

                try:
                    self.lock = RunLock(out).acquire()
                except FileExistsError as e:
                    exit_with_error(e)

    def on_job_end(self, config: DictConfig, **kwargs) -> None:
        if self.lock is not None and str(OmegaConf.select(config, "hydra.mode")) == "RunMode.MULTIRUN":
            self.lock.release()
            self.lock = None
