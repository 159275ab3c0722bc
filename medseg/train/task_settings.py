"""What every task reads from a run's config, resolved once by the entry point.

A task never receives the whole config. :func:`medseg.run.app.run` builds one :class:`TaskSettings`
from it (the evaluation protocol, the loss, the few trainer values a task needs), and the task's own
options come bound from its model yaml (``options: ${oc.select:func_2d}`` under ``task_2d``), so each
task is constructed as ``Task(ctx=..., settings=..., options=...)``::

    task_2d:
      _target_: func_2d.task.SAM2ImageTask
      _partial_: true
      options: ${oc.select:func_2d}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from medseg.data.prompts import PromptConfig
from medseg.eval.evaluation import EvalProtocol


@dataclass(frozen=True)
class TaskSettings:
    """The run-wide values a task uses (see the module docstring).

    protocol: how every score is computed (prompts, jitter, threshold); ``prompt`` is its prompt config.
    loss_fn: the configured loss (``loss=...``), built once; None when a library trains (YOLO).
    train: ``train=true`` (fit) or false (evaluate a checkpoint).
    activation_checkpointing, limit_val_batches, vis_max_cases, progress_bar, max_epochs, batch_size:
    the ``trainer.*`` / top-level values of the same names (vis_max_cases None: the task's default).
    model_name, image_size: ``model.name`` and ``model.image_size`` (recorded beside external weights).
    """

    protocol: EvalProtocol
    loss_fn: Any = None
    train: bool = True
    activation_checkpointing: bool = False
    limit_val_batches: int | None = None
    vis_max_cases: int | None = None
    progress_bar: bool = True
    max_epochs: int = 1
    batch_size: int = 1
    model_name: str = ""
    image_size: int = 1024

    @property
    def prompt(self) -> PromptConfig:
        return self.protocol.prompt

    @classmethod
    def from_cfg(cls, cfg, mode: str = "2d") -> TaskSettings:
        """From a composed run config (:class:`medseg.schema.TrainConfig`: every key is there, typed and
        checked); ``mode`` picks the threshold group of the protocol (``func_2d`` / ``func_3d``)."""
        from hydra.utils import instantiate

        t = cfg.trainer
        return cls(
            protocol=EvalProtocol.from_cfg(cfg, mode),
            loss_fn=instantiate(cfg.loss) if cfg.loss is not None else None,
            train=bool(cfg.train),
            activation_checkpointing=bool(t.activation_checkpointing),
            limit_val_batches=t.limit_val_batches,
            vis_max_cases=int(cfg.vis_max_cases),
            progress_bar=bool(t.progress_bar),
            max_epochs=int(t.max_epochs),
            batch_size=int(t.batch_size) if str(t.batch_size) != "auto" else 1,
            model_name=str(cfg.model.name),
            image_size=int(cfg.model.image_size),
        )
