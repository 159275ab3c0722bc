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
- ``trainer.resume=auto`` without a ``checkpoint_last.pth`` starts afresh only where that replaces no result
  (:func:`~medseg.train.run_folder.check_auto_resume`).
- Pre-flight, before the first byte: a ``logger=`` whose package is missing, a bad ``trainer.resume`` file,
  a resume of another model or with settings :mod:`medseg.train.resume_policy` refuses.
- The lock records the folder's contents, so that a start failing before its first step leaves the folder as
  it found it (:func:`~medseg.train.run_folder.rollback_failed_start`, called by :func:`medseg.run.app.run`).

:func:`check_output_folder` applies the same rule to ``inference_3d.py``'s whole ``output_dir``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from medseg.run.preconditions import check_evaluation_target, check_launcher, check_writable
from medseg.train.run_folder import RunLock, check_not_under_file, check_run_folder, results_in

log = logging.getLogger(__name__)


def _is_main_process() -> bool:
    """Rank 0 guards the folder (torchrun, srun or submitit: before any process group exists)."""
    from medseg.train.distributed import launcher_rank

    return launcher_rank() == 0


class RunFolderCallback(Callback):
    """Hydra callback enforcing the module's rules; refusals print ``error: ...`` and exit 2."""

    def __init__(self) -> None:
        self.lock: RunLock | None = None

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        if not _is_main_process():
            return
        from medseg.errors import MissingExtraError
        from medseg.run.cli import USER_ERRORS, exit_with_error
        from medseg.run.config_check import validate_config
        from medseg.train.checkpoint import CheckpointError
        from medseg.train.loggers import check_loggers
        from medseg.train.resume_policy import resume_preflight

        try:
            validate_config(config)
            folder = Path(str(config.hydra.run.dir))
            mode = check_run_folder(
                folder,
                overwrite=bool(config.get("overwrite", False)),
                resume=OmegaConf.select(config, "trainer.resume"),
            )
            check_writable(folder, "hydra.run.dir")  # read-only / no permission: one line, nothing created
            check_evaluation_target(config, folder)  # train=false beside a trained run's checkpoints
            # pre-flight: what would otherwise fail after Hydra wrote .hydra/ and the log
            check_loggers(config.get("logger"))
            resume_preflight(config, folder)  # the resume file, its model and the changed settings
            if mode == "resume" and config.hydra.output_subdir is not None and (folder / ".hydra").exists():
                with read_write(config.hydra), open_dict(config.hydra):  # keep the run's own .hydra/ intact
                    config.hydra.output_subdir = (
                        f"{config.hydra.output_subdir}/resume_{time.strftime('%Y%m%d_%H%M%S')}"
                    )
            self.lock = RunLock(folder).acquire(record=True)  # a failed start is undone from this record
        except (*USER_ERRORS, CheckpointError, MissingExtraError) as e:
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
            check_launcher(config)  # launcher=slurm off a cluster: one line before submitit's traceback
            sweep = Path(str(config.hydra.sweep.dir))
            check_not_under_file(sweep, "hydra.sweep.dir")
            check_writable(sweep, "hydra.sweep.dir")
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
