"""What a resumed run may change: one table of settings, each refused or applied and recorded.

A run continued from its ``checkpoint_last.pth`` (``trainer.resume``) is compared, setting by setting, with
the config stored in that checkpoint. For every changed setting the most specific row of
:data:`RESUME_POLICY` decides:

- ``refuse``: one line naming the checkpoint, the setting, its old and new value and why (the run's tables
  would mix two experiments, or the saved state cannot be continued under the new setting);
- ``apply``: the new value is used, logged as ``resume: <key> changed <old> -> <new> (applied)`` and
  recorded in the resumed run's ``run_summary.json`` and checkpoints (``resume_changes``).

The check runs twice, before anything is written: in the run-folder pre-flight of the Hydra callback
(:mod:`medseg.run.rundir`) and in :func:`medseg.run.app.run` before the model is built.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

UNSET = "<unset>"


@dataclass(frozen=True)
class Setting:
    """A row: ``key`` (a config key, covering the keys below it; ``*`` = any key), ``policy``, ``why`` and
    an ``example`` change ``(key, old, new)`` that the tests try."""

    key: str
    policy: str  # "refuse" | "apply"
    why: str
    example: tuple[str, Any, Any]


RESUME_POLICY: tuple[Setting, ...] = (
    Setting(
        "dataset.name", "refuse", "metrics.csv would mix two datasets", ("dataset.name", "kvasir", "refuge")
    ),
    Setting(
        "dataset.root",
        "apply",
        "the data moved: allowed when its case ids match the checkpoint's dataset fingerprint",
        ("dataset.root", "/data/a", "/mnt/a"),
    ),
    Setting(
        "dataset",
        "refuse",
        "the cases, labels or preprocessing of the run would change",
        ("dataset.labels", None, [1, 2]),
    ),
    Setting(
        "model.checkpoint",
        "apply",
        "starting weights; a resume loads its checkpoint's",
        ("model.checkpoint", "a.pt", None),
    ),
    Setting("model", "refuse", "the saved weights belong to the run's model", ("model.image_size", 64, 96)),
    Setting("prompt", "refuse", "the task the run learns would change", ("prompt.kind", "box", "click")),
    Setting("loss", "refuse", "the objective of the run would change", ("loss.dice_weight", 1.0, 0.5)),
    Setting(
        "eval_prompt", "refuse", "validation scores would not be comparable", ("eval_prompt.jitter_px", 0, 5)
    ),
    Setting(
        "eval_split", "refuse", "metrics.csv would mix two evaluation splits", ("eval_split", "val", "test")
    ),
    Setting("seed", "refuse", "the data order of the run would change", ("seed", 42, 7)),
    Setting(
        "optim._target_",
        "refuse",
        "the saved optimizer state belongs to the run's optimizer class",
        ("optim._target_", "torch.optim.AdamW", "torch.optim.SGD"),
    ),
    Setting(
        "optim.param_groups",
        "refuse",
        "the saved optimizer state has the run's parameter groups",
        ("optim.param_groups", [], [{"pattern": "image_encoder.*", "lr": 1e-5}]),
    ),
    Setting(
        "optim",
        "apply",
        "hyper-parameters of the same optimizer (lr sets the parameter groups' and scheduler's base lr)",
        ("optim.lr", 1e-4, 1e-2),
    ),
    Setting(
        "scheduler._target_",
        "refuse",
        "the saved scheduler state belongs to the run's scheduler",
        ("scheduler._target_", "medseg.train.optim.warmup_cosine", "medseg.train.optim.warmup_constant"),
    ),
    Setting(
        "scheduler",
        "apply",
        "the schedule continues from the current step",
        ("scheduler.warmup_steps", 0, 10),
    ),
    Setting(
        "trainer.monitor",
        "refuse",
        "checkpoint_best.pth was chosen by the run's metric",
        ("trainer.monitor", "val/dice", "val/iou"),
    ),
    Setting(
        "trainer.monitor_mode",
        "refuse",
        "checkpoint_best.pth was chosen by the run's metric",
        ("trainer.monitor_mode", "max", "min"),
    ),
    Setting("trainer", "apply", "how long and how the run continues", ("trainer.max_epochs", 2, 5)),
    Setting("*", "apply", "does not change what the run learns or how it is scored", ("vis", False, True)),
)


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict) and v:
                out.update(_flatten(v, key + "."))
            else:
                out[key] = v
    return out


def row_of(key: str) -> Setting:
    """The most specific row covering ``key``."""
    rows = [r for r in RESUME_POLICY if r.key == "*" or key == r.key or key.startswith(r.key + ".")]
    return max(rows, key=lambda r: -1 if r.key == "*" else len(r.key))


def _plain(cfg: Any) -> dict:
    from omegaconf import OmegaConf

    if OmegaConf.is_config(cfg):
        cfg = OmegaConf.to_container(cfg, resolve=False)
    cfg = dict(cfg or {})
    cfg.pop("hydra", None)  # Hydra's own settings (run dir, time stamps) are not the run's
    return cfg


def _schema_defaults() -> dict:
    """The training root's defaults (:class:`medseg.schema.TrainConfig`), flattened like a saved config."""
    from omegaconf import OmegaConf

    from medseg.schema import TrainConfig

    return _flatten(_plain(OmegaConf.to_container(OmegaConf.structured(TrainConfig), resolve=False)))


def check_resume_settings(
    saved: Any, current: Any, path: str | Path, *, announce: bool = False
) -> list[dict]:
    """Compare the config stored in checkpoint ``path`` (``saved``) with ``current``.

    Returns the applied changes ``[{"key", "old", "new", "policy": "apply"}]`` (logged one line each when
    ``announce``). A new value ``auto`` is resolved later (e.g. ``trainer.batch_size``) and not compared.

    Raises:
        ValueError: ``<path>: <key> changed <old> -> <new> on resume: refused (<why>); ...`` for the first
            refused change, in the order of the table.
    """
    if saved is None:  # a checkpoint without its config: nothing to compare
        return []
    old, new = _flatten(_plain(saved)), _flatten(_plain(current))
    implied = _schema_defaults()  # a key a checkpoint of an older version lacks had its schema default
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, UNSET), new.get(key, UNSET)
        if a is UNSET and key in implied and implied[key] == b:
            continue
        if key == "trainer.resume" or a == b or (b == "auto" and a != "auto"):
            continue
        changed.append((key, a, b))
    order = {r.key: i for i, r in enumerate(RESUME_POLICY)}
    changed.sort(key=lambda c: (order[row_of(c[0]).key], c[0]))
    for key, a, b in changed:
        row = row_of(key)
        if row.policy == "refuse":
            raise ValueError(
                f"{path}: {key} changed {a!r} -> {b!r} on resume: refused ({row.why}); resume with the "
                "run's settings, or start a new hydra.run.dir (model.checkpoint= takes its weights)"
            )
    changes = [{"key": k, "old": a, "new": b, "policy": "apply"} for k, a, b in changed]
    if announce:
        for c in changes:
            log.info("resume: %s changed %s -> %s (applied)", c["key"], c["old"], c["new"])
    return changes


def optimizer_settings(optimizer, scheduler) -> list[dict]:
    """The hyper-parameters of each parameter group as built from the current config (call before the run's
    state is loaded): ``base_lr`` from the scheduler, the rest (weight decay, betas, momentum...) as set."""
    bases = list(getattr(scheduler, "base_lrs", [g["lr"] for g in optimizer.param_groups]))
    return [
        {"base_lr": float(b), **{k: v for k, v in g.items() if k not in ("params", "lr", "initial_lr")}}
        for g, b in zip(optimizer.param_groups, bases)
    ]


def apply_optimizer_settings(optimizer, scheduler, fresh: list[dict]) -> None:
    """After loading the run's optimizer/scheduler state: use the current config's hyper-parameters
    (``fresh``, from :func:`optimizer_settings`); a changed base lr keeps the schedule's position (the
    current lr is scaled by new/old base lr)."""
    if len(fresh) != len(optimizer.param_groups):
        return
    bases = getattr(scheduler, "base_lrs", None)
    for i, (group, want) in enumerate(zip(optimizer.param_groups, fresh)):
        group.update({k: v for k, v in want.items() if k != "base_lr"})
        new = want["base_lr"]
        old = float(bases[i]) if bases is not None else float(group.get("initial_lr", group["lr"]))
        if old == new:
            continue
        group["lr"] = group["lr"] * (new / old) if old > 0 else new
        group["initial_lr"] = new
        if bases is not None:
            bases[i] = new
    if hasattr(scheduler, "_last_lr"):
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]


def resume_file(cfg, folder: str | Path) -> Path | None:
    """The checkpoint ``trainer.resume`` names: a path, or for ``auto`` the folder's ``checkpoint_last.pth``
    (None when there is none: a fresh start, refused where it would replace results, see
    :func:`medseg.train.run_folder.check_auto_resume`)."""
    from omegaconf import OmegaConf

    r = OmegaConf.select(cfg, "trainer.resume")
    if not r:
        return None
    if str(r) == "auto":
        last = Path(folder) / "checkpoint_last.pth"
        if last.is_file():
            return last
        if not OmegaConf.select(cfg, "overwrite", default=False):
            from medseg.train.run_folder import check_auto_resume

            check_auto_resume(folder)
        return None
    return Path(str(r))


def resume_preflight(
    cfg, folder: str | Path, *, announce: bool = False
) -> tuple[Path, dict, list[dict]] | None:
    """Everything about ``trainer.resume`` that can fail, before anything is written: the file is a run's
    training checkpoint, of this model, and the settings changed since are allowed (:data:`RESUME_POLICY`).

    Returns ``(path, checkpoint, applied changes)``, or None when the run does not resume.
    """
    from omegaconf import OmegaConf

    from medseg.train.checkpoint import check_resume_model, read_training_checkpoint

    path = resume_file(cfg, folder)
    if path is None:
        return None
    ck = read_training_checkpoint(path)
    try:
        current_model = OmegaConf.to_container(cfg.model, resolve=True)
    except Exception:  # noqa: BLE001 - an interpolation only a Hydra run resolves: the table still compares
        current_model = None
    check_resume_model(ck.get("model_cfg"), current_model, path)
    return path, ck, check_resume_settings(ck.get("config"), cfg, path, announce=announce)
