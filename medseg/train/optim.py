"""Optimizers and schedulers from config (``conf/optim``, ``conf/scheduler``)."""

from __future__ import annotations

import math

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from medseg.train.params import param_groups


def build_optimizer(cfg: DictConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Instantiate ``cfg`` (a ``_partial_`` optimizer) over the trainable parameters, grouped by
    ``cfg.param_groups`` name patterns."""
    cfg = OmegaConf.to_container(cfg, resolve=True)
    groups = cfg.pop("param_groups", None) or []
    lr, wd = float(cfg["lr"]), float(cfg["weight_decay"])  # every optimizer schema has both
    factory = instantiate(cfg)
    return factory(param_groups(model, lr, wd, groups))


def warmup_cosine(optimizer, *, total_steps: int, warmup_steps: int = 0, min_lr_ratio: float = 0.0):
    """Linear warm-up over ``warmup_steps`` then cosine decay to ``min_lr_ratio`` of each group's lr."""
    total_steps = max(int(total_steps), 1)

    def factor(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def warmup_constant(optimizer, *, total_steps: int = 0, warmup_steps: int = 0):
    """Linear warm-up then a constant lr."""

    def factor(step: int) -> float:
        return (step + 1) / warmup_steps if warmup_steps and step < warmup_steps else 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def build_scheduler(cfg: DictConfig, optimizer, total_steps: int):
    factory = instantiate(cfg)
    try:
        return factory(optimizer, total_steps=total_steps)
    except TypeError:
        return factory(optimizer)
