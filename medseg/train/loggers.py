"""Experiment loggers chosen with ``logger=``: TensorBoard (default), CSV, Weights & Biases, MLflow.

Each file of ``conf/logger/`` puts one entry with a ``_target_`` under ``logger.<name>``; a list
(``logger=[tensorboard,wandb]``) merges several entries, and :func:`build_loggers` instantiates every
entry into one :class:`LoggerGroup`. All backends receive the same calls from the engine:

    log_scalars({"train/loss": 0.3, "lr/default": 1e-4}, step)   # loss parts, lr per group, metrics
    log_hparams(resolved_config_as_nested_dict)
    log_images({"val_images/case_0": uint8 [H, W, 3]}, step)     # where the backend supports images
    close()

Only rank 0 logs (``build_loggers(..., is_main=False)`` returns an empty group). W&B and MLflow are
optional packages (``pip install -e '.[loggers]'``); a missing one is one error line naming the extra.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import MissingExtraError

EXTRA_HINT = "pip install -e '.[loggers]'"


def _require(module: str, logger: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtraError(
            f"logger={logger} needs the '{module.split('.')[0]}' package, which is not installed: {EXTRA_HINT}"
        ) from None


def flatten(d: Mapping, prefix: str = "") -> dict[str, Any]:
    """Nested mapping -> ``{"a/b/c": value}`` with lists written as JSON strings."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "/"))
        else:
            out[key] = json.dumps(v) if isinstance(v, (list, tuple)) else v
    return out


def _finite(values: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in values.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue
        if np.isfinite(f):
            out[k] = f
    return out


class TensorBoardLogger:
    """Event files under ``<run>/<save_dir>`` (``tensorboard --logdir <run>``)."""

    def __init__(self, *, out_dir: str | Path, save_dir: str = "tensorboard"):
        from torch.utils.tensorboard import SummaryWriter

        self.path = Path(out_dir) / save_dir
        self.writer = SummaryWriter(str(self.path))

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        for k, v in _finite(values).items():
            self.writer.add_scalar(k, v, step)

    def log_hparams(self, params: Mapping) -> None:
        text = "\n".join(f"    {k}: {v}" for k, v in flatten(params).items())
        self.writer.add_text("config", text, 0)

    def log_images(self, images: Mapping[str, np.ndarray], step: int) -> None:
        for name, img in images.items():
            self.writer.add_image(name, np.asarray(img), step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()


class CSVLogger:
    """``<run>/<save_dir>/scalars.csv`` (one row per step and name: step, name, value) and
    ``hparams.json``; images are not logged (``vis/`` holds the pictures)."""

    def __init__(self, *, out_dir: str | Path, save_dir: str = "csv"):
        self.path = Path(out_dir) / save_dir
        self.path.mkdir(parents=True, exist_ok=True)
        new = not (self.path / "scalars.csv").exists()
        self._file = open(self.path / "scalars.csv", "a", encoding="utf-8", newline="")  # appends on resume
        self._csv = csv.writer(self._file)
        if new:
            self._csv.writerow(["step", "name", "value"])

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        for k, v in _finite(values).items():
            self._csv.writerow([int(step), k, repr(v)])
        self._file.flush()

    def log_hparams(self, params: Mapping) -> None:
        (self.path / "hparams.json").write_text(json.dumps(params, indent=1, default=str), encoding="utf-8")

    def log_images(self, images: Mapping[str, np.ndarray], step: int) -> None:
        return None

    def close(self) -> None:
        self._file.close()


class WandbLogger:
    """A Weights & Biases run in ``<run>/wandb``. ``mode`` is ``offline`` unless ``WANDB_MODE`` says
    otherwise (``wandb sync <run>/wandb/offline-run-*`` uploads it later)."""

    requires = "wandb"  # checked by :func:`check_loggers` before the run folder is written

    def __init__(
        self,
        *,
        out_dir: str | Path,
        project: str,
        name: str | None = None,
        mode: str = "offline",
        entity: str | None = None,
        tags: list[str] | None = None,
        group: str | None = None,
    ):
        wandb = _require("wandb", "wandb")
        self.wandb = wandb
        os.makedirs(out_dir, exist_ok=True)
        self.run = wandb.init(
            dir=str(out_dir),
            project=project,
            name=name,
            mode=mode,
            entity=entity,
            tags=list(tags) if tags else None,
            group=group,
            reinit="create_new",
        )

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        self.run.log(_finite(values), step=int(step))

    def log_hparams(self, params: Mapping) -> None:
        self.run.config.update(dict(params), allow_val_change=True)

    def log_images(self, images: Mapping[str, np.ndarray], step: int) -> None:
        self.run.log({k: self.wandb.Image(np.asarray(v)) for k, v in images.items()}, step=int(step))

    def close(self) -> None:
        self.run.finish()


def _mlflow_name(key: str) -> str:
    """``val/dice/liver`` -> ``val.dice.liver``: the file store keeps each name as a file path, so
    ``val/dice`` could not sit beside ``val/dice/liver``; other characters MLflow refuses become ``_``."""
    import re

    return re.sub(r"[^A-Za-z0-9_\-. ]", "_", key.replace("/", "."))


class MLflowLogger:
    """An MLflow run; ``tracking_uri`` defaults to the local file store ``paths.log_dir/mlruns``
    (``mlflow ui --backend-store-uri <that folder>``). Names use ``.`` where the others use ``/``
    (``train.loss``, ``val.dice.liver``, params ``model.image_size``)."""

    requires = "mlflow"

    def __init__(
        self,
        *,
        out_dir: str | Path,
        experiment_name: str,
        tracking_uri: str,
        run_name: str | None = None,
        tags: Mapping[str, str] | None = None,
    ):
        mlflow = _require("mlflow", "mlflow")
        from mlflow.entities import Metric, Param

        self._metric, self._param = Metric, Param
        if "://" not in tracking_uri:  # a folder: the local file store (MLflow 3 asks for an explicit opt-in)
            tracking_uri = Path(tracking_uri).resolve().as_uri()
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = mlflow.tracking.MlflowClient(tracking_uri=tracking_uri)
        exp = self.client.get_experiment_by_name(experiment_name)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(experiment_name)
        run_tags = {"mlflow.runName": run_name or Path(out_dir).name, "output_dir": str(out_dir)}
        run_tags.update({str(k): str(v) for k, v in (tags or {}).items()})
        self.run_id = self.client.create_run(exp_id, tags=run_tags).info.run_id
        self.tracking_uri = tracking_uri

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        import time

        ts = int(time.time() * 1000)
        metrics = [self._metric(_mlflow_name(k), v, ts, int(step)) for k, v in _finite(values).items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def log_hparams(self, params: Mapping) -> None:
        flat = {_mlflow_name(k): v for k, v in flatten(params).items()}
        items = [self._param(k, str(v)[:500]) for k, v in flat.items()]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=items[i : i + 100])

    def log_images(self, images: Mapping[str, np.ndarray], step: int) -> None:
        for k, v in images.items():
            self.client.log_image(self.run_id, np.asarray(v), f"{k}_step{int(step):06d}.png")

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class LoggerGroup:
    """Fan one call out to every configured logger (empty on ranks other than 0)."""

    def __init__(self, loggers: list | None = None, *, log_images: bool = True):
        self.loggers = list(loggers or [])
        self.images = bool(log_images)

    def __bool__(self) -> bool:
        return bool(self.loggers)

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        for lg in self.loggers:
            lg.log_scalars(values, step)

    def log_hparams(self, params: Mapping) -> None:
        for lg in self.loggers:
            lg.log_hparams(params)

    def log_images(self, images: Mapping[str, np.ndarray], step: int) -> None:
        if self.images and images:
            for lg in self.loggers:
                lg.log_images(images, step)

    def close(self) -> None:
        for lg in self.loggers:
            lg.close()
        self.loggers = []


def build_loggers(logger_cfg: Any, out_dir: str | Path, *, is_main: bool = True) -> LoggerGroup:
    """Instantiate every ``_target_`` entry of the ``logger`` config node (rank 0 only)."""
    if not is_main or not logger_cfg:
        return LoggerGroup()
    from hydra.utils import instantiate

    loggers = []
    for node in logger_cfg.values():
        if isinstance(node, Mapping) and "_target_" in node:
            try:
                loggers.append(instantiate(node, out_dir=str(out_dir)))
            except Exception as exc:  # hydra wraps the constructor's error: keep its one line
                if isinstance(exc.__cause__, MissingExtraError):
                    raise exc.__cause__ from None
                raise
    return LoggerGroup(loggers, log_images=bool(logger_cfg.get("log_images", True)))


def check_loggers(logger_cfg: Any) -> None:
    """Refuse a ``logger=`` whose optional package is missing, without building it (the run-folder
    pre-flight, before anything is written).

    Raises:
        MissingExtraError: ``logger=<name> needs the '<package>' package ...: pip install ...``.
    """
    if not logger_cfg:
        return
    from hydra.utils import get_class

    for name, node in logger_cfg.items():
        if isinstance(node, Mapping) and "_target_" in node:
            try:
                cls = get_class(str(node["_target_"]))
            except Exception:  # noqa: BLE001 - a wrong _target_ is reported where it is built
                continue
            if getattr(cls, "requires", None):
                _require(cls.requires, str(name))


def loggable_config(cfg) -> dict:
    """The run's config as plain nested containers, resolved where it can be (else as written)."""
    from omegaconf import OmegaConf

    try:
        out = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation that only resolves inside a Hydra run
        out = OmegaConf.to_container(cfg, resolve=False)
    out.pop("hydra", None)  # Hydra's own settings are in .hydra/ of the run folder
    return out
