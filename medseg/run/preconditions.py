"""Checks of a start that need the machine, not only the config, run by the run-folder callback
(:mod:`medseg.run.rundir`) before Hydra writes anything: the run folder can be written, ``train=false``
does not score other weights beside a trained run's checkpoints, and a SLURM launcher has SLURM.

Each raises one line naming the option (a user error: exit 2).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from omegaconf import OmegaConf

CHECKPOINTS = ("checkpoint_best.pth", "checkpoint_last.pth")


def check_writable(folder: str | Path, key: str) -> None:
    """``folder`` (or the nearest folder above it that exists) can be written by this process.

    Raises:
        PermissionError: ``<key>=<folder>: cannot write in <where> (read-only or no permission)``.
    """
    folder = Path(folder)
    for p in (folder, *folder.parents):
        if p.exists():
            if p.is_dir() and not os.access(p, os.W_OK | os.X_OK):
                raise PermissionError(
                    f"{key}={folder}: cannot write in {p} (read-only file system or no permission); "
                    f"give a {key} you can write"
                )
            return


def check_evaluation_target(cfg, folder: str | Path) -> None:
    """``train=false overwrite=true`` into a folder holding a trained run's checkpoints scores only that
    run's own weights (``model.checkpoint`` = a file in the folder); anything else (random or pre-trained
    weights) would write its metrics beside checkpoints they do not describe.

    Raises:
        FileExistsError: one line naming the folder, ``model.checkpoint`` and the two fixes.
    """
    if cfg.get("train", True) or not cfg.get("overwrite", False):
        return
    folder = Path(folder)
    found = [n for n in CHECKPOINTS if (folder / n).is_file()]
    if not found:
        return
    given = OmegaConf.select(cfg, "model.checkpoint", default=None)
    if given not in (None, "", "auto") and Path(str(given)).expanduser().resolve().parent == folder.resolve():
        return
    raise FileExistsError(
        f"{folder}: holds the checkpoints of a trained run ({', '.join(found)}); train=false would score "
        f"model.checkpoint={given} there, not that run: give model.checkpoint={folder / found[0]} to "
        "evaluate it, or another hydra.run.dir"
    )


def check_launcher(cfg) -> None:
    """A multirun through SLURM (``launcher=slurm``) needs ``srun`` on this machine (a cluster's login
    node); submitit would fail later with a traceback.

    Raises:
        ValueError: ``launcher=slurm: ...`` naming the missing command and the local launchers.
    """
    target = str(OmegaConf.select(cfg, "hydra.launcher._target_", default="") or "")
    if "SlurmLauncher" in target and shutil.which("srun") is None:
        choice = OmegaConf.select(cfg, "hydra.runtime.choices.launcher", default=None) or "slurm"
        raise ValueError(
            f"launcher={choice}: SLURM's srun is not on PATH, so this machine is not a SLURM cluster; submit "
            "from the cluster's login node, or use launcher=local (one job after another here) or "
            "launcher=submitit_local"
        )
