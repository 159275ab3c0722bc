"""The one checkpoint module: the format of our files, the training state they hold, atomic writing, safe
reading, strict weight loading and resuming. Used by the engine, every model family and inference.

Format (``CKPT_FORMAT``): a ``torch.save`` dict of plain containers and tensors (``weights_only=True``
loadable) with ``format``, ``model`` (state dict), ``optimizer``, ``scheduler``, ``scaler``, ``epoch``,
``batch_in_epoch``, ``epoch_progress``, ``step``, ``rng``, ``best``, ``history``, ``config`` (unresolved),
``task`` (task state, e.g. a memory bank), plus the run's extras (``model_cfg``, ``splits``, ``weights``,
``eval_protocol``). ``checkpoint_best.pth`` drops optimizer, scheduler, scaler and RNG state.

Safety: every file a user passes is sniffed first (:mod:`medseg.train.pickle_guard`: a text file or another
non-torch file is named as such) and loaded with ``weights_only=True`` (a pickle that needs code is refused).
Every failure is one :class:`CheckpointError` line that names the file.
"""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import torch

from medseg.errors import StorageError

log = logging.getLogger(__name__)

CKPT_FORMAT = "sam2-medical/1"
TRAINING_ONLY = ("optimizer", "scheduler", "scaler", "rng")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be loaded; the message is one line naming the file."""


def read_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint file with ``weights_only=True``; one clear error per failure mode."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty (0 bytes)")
    from medseg.train.pickle_guard import UnsafeFileError, sniff_torch_file

    try:
        sniff_torch_file(path)
    except UnsafeFileError as e:  # e.g. a text file: torch's own error would not name it
        raise CheckpointError(str(e)) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "Unsupported global" in str(e) or "GLOBAL " in str(e):
            raise CheckpointError(
                f"{path}: refused: the file is a pickle that needs code to load (weights_only=True); "
                f"only tensors/containers are accepted ({first[:160]})"
            ) from None
        reason = next(
            (
                ln.strip()
                for ln in str(e).splitlines()
                if "load key" in ln or "truncated" in ln or "Unsupported operand" in ln
            ),
            first,
        )
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({reason[:160]})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError, IndexError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({msg[:160]})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{path}: expected a dict with a 'model' state dict, found {type(obj).__name__}"
        )
    return obj


def state_dict_of(obj: dict, path: str | Path) -> dict:
    """The model's state dict in a checkpoint: ``{"model": state_dict}`` (Meta's files, ours), Medical-SAM2's
    ``{"model": "sam2", "state_dict": state_dict, ...}``, or a bare state dict."""
    if isinstance(obj.get("model"), str) and isinstance(obj.get("state_dict"), dict):
        obj = {"model": obj["state_dict"]}  # Medical-SAM2: "model" names the network
    sd = obj.get("model", obj)
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: no 'model' state dict of tensors in this checkpoint")
    return sd


def key_mismatch(expected, found) -> str:
    """``"N missing keys (first: ...); M unexpected keys (first: ...)"`` between two key sets, or ``""``."""
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (first: {', '.join(missing[:4])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:4])})")
    return "; ".join(parts)


def load_state_strict(
    model: torch.nn.Module, state_dict: dict, path: str | Path, what: str = "the model", hint: str = ""
) -> None:
    """``load_state_dict(strict=True)`` with one line naming ``path`` and the first mismatching keys or
    shapes (torch's own error is a multi-line list without the file); ``hint`` ends the line (e.g.
    ``"; it looks like 'sam2.1_hiera_s'"``). Nothing is loaded when anything mismatches."""
    expected = model.state_dict()
    mismatch = key_mismatch(expected, state_dict)
    if mismatch:
        raise CheckpointError(f"{path}: keys do not match {what}: {mismatch}{hint}")
    bad = [k for k, v in state_dict.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if bad:
        k = bad[0]
        raise CheckpointError(
            f"{path}: {len(bad)} tensors have the wrong shape for {what}, e.g. {k}: file "
            f"{tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}{hint}"
        )
    model.load_state_dict(state_dict, strict=True)


def load_weights_file(model: torch.nn.Module, path: str | Path, what: str = "the model") -> dict:
    """A weights file a user passed (ours, or a bare ``{"model": ...}`` / state dict), read safely and
    loaded strictly into ``model`` (:func:`read_checkpoint`, :func:`load_state_strict`); returns the
    object read."""
    obj = read_checkpoint(path)
    load_state_strict(model, state_dict_of(obj, path), path, what)
    return obj


def atomic_torch_save(obj, path: str | Path) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``.

    A kill at any moment leaves either the old file or the new one, never a partial one.
    """
    from medseg.train.runtime import temp_file_beside

    path = Path(path)
    fd, tmp = temp_file_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as e:
        Path(tmp).unlink(missing_ok=True)
        free = shutil.disk_usage(path.parent).free / 2**30
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise StorageError(  # a user error (one line, exit 2), not a traceback
            f"{path}: could not write the checkpoint ({first[:200]}); {free:.2f} GiB free in {path.parent}"
            + (f"; the previous {path.name} is untouched" if path.exists() else "")
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


RESUME_KEYS = ("name", "variant", "image_size")  # what a checkpoint's model must share with the config


def check_resume_model(saved: dict | None, current: dict | None, path) -> None:
    """Refuse resuming ``path`` (its ``model_cfg`` = ``saved``) under a different model config.

    Raises:
        ValueError: ``<path>: model.<key> is X but the checkpoint was trained with Y``.
    """
    saved, current = saved or {}, current or {}
    for key in RESUME_KEYS:
        if key in saved and key in current and str(saved[key]) != str(current[key]):
            raise ValueError(
                f"{path}: model.{key}={current[key]} but this checkpoint was trained with "
                f"model.{key}={saved[key]}; resume with the run's settings (or start a new run from its weights)"
            )


def training_state(engine, *, weights_only: bool = False) -> dict:
    """The checkpoint dict of an :class:`~medseg.train.engine.Engine` at its current position."""
    state = {
        "format": CKPT_FORMAT,
        "model": {k: v.detach().cpu() for k, v in engine.model.state_dict().items()},
        "optimizer": engine.optimizer.state_dict() if engine.optimizer is not None else None,
        "scheduler": engine.scheduler.state_dict() if engine.scheduler is not None else None,
        "scaler": engine.scaler.state_dict(),
        "epoch": engine.epoch,
        "batch_in_epoch": engine.batch_in_epoch,
        "epoch_progress": engine.epoch_progress,
        "step": engine.step,
        "rng": rng_state(),
        "best": dict(engine.best),
        "history": list(engine.history),
        "config": engine.run.record,
        "task": engine.task.state_dict() if isinstance(engine.task, StatefulTask) else {},
        **engine.extra_state,
    }
    if weights_only:
        for key in TRAINING_ONLY:
            state.pop(key, None)
    return state


def read_training_checkpoint(path: str | Path) -> dict:
    """A run's ``checkpoint_last.pth`` for ``trainer.resume``, read safely; weights-only files and files of
    other programs are one :class:`CheckpointError` line."""
    ck = read_checkpoint(path)
    if ck.get("format") != CKPT_FORMAT or "optimizer" not in ck:
        what = (
            "holds weights only"
            if ck.get("format") == CKPT_FORMAT
            else "is not a training checkpoint of this suite"
        )
        raise CheckpointError(f"{path}: {what} (trainer.resume needs a run's checkpoint_last.pth)")
    if ck["optimizer"] is None:
        raise CheckpointError(
            f"{path}: this run trained in its library's own loop (model={(ck.get('model_cfg') or {}).get('name')}), "
            "which cannot continue from a checkpoint; start a new run (model.checkpoint= takes its weights)"
        )
    return ck


def resume_training(engine, path: str | Path, ck: dict | None = None) -> None:
    """Restore an engine from a run's ``checkpoint_last.pth`` (``ck``: that file already read): weights,
    optimizer, scheduler, scaler, position (epoch, batch inside it), best, history, RNG and task state.
    Refuses weights-only files, other files, a checkpoint of another model (name, variant, image size) and
    changed settings that :data:`medseg.train.resume_policy.RESUME_POLICY` refuses; applies the others
    (e.g. ``optim.lr``)."""
    from medseg.train.resume_policy import apply_optimizer_settings, check_resume_settings, optimizer_settings

    ck = ck if ck is not None else read_training_checkpoint(path)
    check_resume_model(ck.get("model_cfg"), engine.extra_state.get("model_cfg"), path)
    if "resume_changes" not in engine.extra_state:  # not checked by medseg.run.app.run already
        engine.extra_state["resume_changes"] = check_resume_settings(
            ck.get("config"), engine.run.record, path, announce=True
        )
    load_state_strict(engine.model, ck["model"], path, "this config's model")
    fresh = optimizer_settings(engine.optimizer, engine.scheduler)  # the current config's
    engine.optimizer.load_state_dict(ck["optimizer"])
    engine.scheduler.load_state_dict(ck["scheduler"])
    apply_optimizer_settings(engine.optimizer, engine.scheduler, fresh)  # changes the table applies
    engine.scaler.load_state_dict(ck["scaler"])
    engine.epoch, engine.batch_in_epoch, engine.step = ck["epoch"], ck["batch_in_epoch"], ck["step"]
    engine.epoch_progress = ck.get("epoch_progress")
    engine.best = ck["best"]
    engine.history = list(ck.get("history", []))
    set_rng_state(ck["rng"])
    if isinstance(engine.task, StatefulTask):
        engine.task.load_state_dict(ck.get("task", {}))
    log.info(
        "resumed from %s at epoch %d, batch %d of it, step %d",
        *(path, engine.epoch, engine.batch_in_epoch, engine.step),
    )


from medseg.train.contract import StatefulTask  # noqa: E402  (contract imports nothing from here)
from medseg.train.runtime import rng_state, set_rng_state  # noqa: E402  (runtime imports nothing from here)
