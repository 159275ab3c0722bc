"""What the engine (:class:`medseg.train.engine.Engine`) takes: typed, never the whole config.

- :class:`~medseg.schema.TrainerConfig`: the ``trainer.*`` options;
- a *task* (:class:`Task`), with optional parts it may have (:class:`ExternalTrainer`, :class:`StatefulTask`,
  :class:`PreparesModel`), found with ``isinstance`` against these protocols;
- a :class:`RunSpec`: the few run-wide values and builders the loop needs (seed, optimizer and scheduler
  builders, loggers, the config record stored in checkpoints).

The run layer (:func:`medseg.run.app.run_spec`) builds the spec from a composed config; a test or a script
builds one directly::

    Engine(trainer=TrainerConfig(max_epochs=2, device="cpu"), task=task, model=net, out_dir=out,
           device=torch.device("cpu"), run=RunSpec(seed=0, optimizer=lambda m: torch.optim.SGD(...)))
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = ["ExternalTrainer", "PreparesModel", "RunSpec", "StatefulTask", "Task"]


@runtime_checkable
class Task(Protocol):
    """The model-specific parts of training and validation (see :mod:`medseg.train.engine`)."""

    train_dataset: Any  # __len__ and get(i, rng) -> sample
    collate: Callable[[list], Any]  # samples -> batch with .to(device)

    def training_step(self, model: torch.nn.Module, batch: Any) -> dict: ...

    def validate(self, model: torch.nn.Module, *, epoch: int, vis_dir: Path | None) -> tuple: ...


@runtime_checkable
class ExternalTrainer(Protocol):
    """A task whose model trains in a library's own loop (YOLO: ultralytics). The engine keeps everything
    else: run folder, ``metrics.csv`` rows (one per epoch of the library's log), loggers, validation with
    the suite's protocol, ``checkpoint_best/last.pth`` in the suite's format (no optimizer: not resumable)."""

    def fit_external(
        self, model: Any, out_dir: Path, device: torch.device
    ) -> tuple[torch.nn.Module, list[dict]]:
        """Train; returns the trained network and one row per epoch (``epoch``, ``step``, ``train/*``)."""
        ...

    def load_external(self, model: Any) -> torch.nn.Module:
        """``train=false``: the network to score."""
        ...


@runtime_checkable
class StatefulTask(Protocol):
    """A task with state of its own saved in checkpoints (e.g. a memory bank, the YOLO weights file)."""

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@runtime_checkable
class PreparesModel(Protocol):
    """A task that sets up the built model before training (e.g. learned class prompts)."""

    def prepare_model(self, model: torch.nn.Module) -> None: ...


def _no_loggers(out_dir: Path):
    return None


@dataclass
class RunSpec:
    """The run-wide values the engine needs besides the trainer options.

    seed: data order and augmentation (per epoch and sample). optimizer(model) / scheduler(optimizer,
    total_steps): built when training starts. loggers(out_dir): the ``logger=`` backends (or None), opened on rank 0 only.
    hparams: what the loggers record as the run's settings. record: the config as written, stored in every
    checkpoint (``config``) and compared on resume. vis / test_after_training / overwrite / model_name:
    the top-level options of the same names (``model.name``).
    """

    seed: int = 0
    optimizer: Callable[[torch.nn.Module], torch.optim.Optimizer] | None = None
    scheduler: Callable[[torch.optim.Optimizer, int], Any] | None = None
    loggers: Callable[[Path], Any] = _no_loggers
    hparams: dict = field(default_factory=dict)
    record: dict = field(default_factory=dict)
    vis: bool = False
    test_after_training: bool = False
    overwrite: bool = False
    model_name: str = ""

    def build_scheduler(self, optimizer: torch.optim.Optimizer, total_steps: int):
        if self.scheduler is None:
            return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        return self.scheduler(optimizer, total_steps)
