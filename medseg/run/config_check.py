"""Type and range of every numeric (and enumerated) option, checked before anything is built.

One table, :data:`RULES`: ``"group.option": Rule(...)``. :func:`validate_config` checks each option that
is present in the config (absent ones are skipped: not every root has every group) and raises one
``ValueError`` naming the option, the value given and what is expected, e.g.::

    optim.lr: expected a number > 0, got 'abc'
    trainer.val_freq: expected an integer >= 1, got 0
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from omegaconf import OmegaConf

__all__ = ["RULES", "Rule", "validate_config"]
_MISSING = object()


@dataclass(frozen=True)
class Rule:
    """``kind``: int | float | bool | choice; ``lo``/``hi`` bounds (``lo_open``: strictly above ``lo``);
    ``null``: None allowed; ``choices`` for ``choice`` (and extra words an int/float option accepts)."""

    kind: str
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False
    null: bool = False
    choices: tuple[Any, ...] = ()

    def expected(self) -> str:
        if self.kind == "bool":
            text = "true or false"
        elif self.kind == "choice":
            text = "one of " + ", ".join(map(str, self.choices))
        else:
            text = "an integer" if self.kind == "int" else "a number"
            if self.lo is not None and self.hi is not None:
                lb, rb = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
                text += f" in {lb}{self.lo:g}, {self.hi:g}{rb}"
            elif self.lo is not None:
                text += f" {'>' if self.lo_open else '>='} {self.lo:g}"
            if self.choices:
                text += " or " + " or ".join(map(str, self.choices))
        return text + (" or null" if self.null else "")

    def ok(self, v: Any) -> bool:
        if v is None:
            return self.null
        if self.kind == "bool":
            return isinstance(v, bool)
        if self.kind == "choice" or (self.choices and v in self.choices):
            return v in self.choices
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if self.kind == "int" and not isinstance(v, int):
            return False
        if not math.isfinite(v):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))


def _int(lo=None, **kw) -> Rule:
    return Rule("int", lo, **kw)


def _num(lo=None, hi=None, **kw) -> Rule:
    return Rule("float", lo, hi, **kw)


BOOL = Rule("bool")
POSITIVE = _num(0, lo_open=True)
FRACTION = _num(0, 1)

RULES: dict[str, Rule] = {
    # trainer
    "trainer.max_epochs": _int(1),
    "trainer.max_steps": _int(1, null=True),
    "trainer.batch_size": _int(1, choices=("auto",)),
    "trainer.num_workers": _int(0),
    "trainer.pin_memory": Rule("choice", choices=(True, False, "auto")),
    "trainer.limit_train_batches": _int(1, null=True),
    "trainer.limit_val_batches": _int(1, null=True),
    "trainer.val_freq": _int(1),
    "trainer.accumulate_grad_batches": _int(1),
    "trainer.gradient_clip_val": _num(0, lo_open=True, null=True),
    "trainer.log_every_n_steps": _int(1),
    "trainer.stop_after_epochs": _int(1, null=True),
    "trainer.save_every_n_steps": _int(1, null=True),
    "trainer.ddp.find_unused_parameters": Rule("choice", choices=(True, False, "auto")),
    "trainer.ddp.bucket_cap_mb": POSITIVE,
    "trainer.monitor_mode": Rule("choice", choices=("max", "min")),
    "trainer.amp": BOOL,
    "trainer.deterministic": BOOL,
    "trainer.val_before_training": BOOL,
    "trainer.activation_checkpointing": BOOL,
    "trainer.progress_bar": BOOL,
    # optim
    "optim.lr": POSITIVE,
    "optim.weight_decay": _num(0),
    "optim.momentum": _num(0, 1, hi_open=True),
    # scheduler
    "scheduler.warmup_steps": _int(0),
    "scheduler.min_lr_ratio": FRACTION,
    "scheduler.step_size": _int(1),
    "scheduler.gamma": POSITIVE,
    # func_2d
    "func_2d.multimask_output": BOOL,
    "func_2d.memory_bank": BOOL,
    "func_2d.bank_size": _int(1),
    "func_2d.bank_min_iou": FRACTION,
    "func_2d.threshold": _num(),
    # func_3d
    "func_3d.video_length": _int(1),
    "func_3d.max_objects": _int(1),
    "func_3d.batch_clips": BOOL,
    "func_3d.encoder_chunk": _int(1),
    "func_3d.reverse_prob": FRACTION,
    "func_3d.val_prompt": Rule("choice", choices=("key_slice", "freq")),
    "func_3d.offload": BOOL,
    "func_3d.threshold": _num(),
    "func_3d.largest_component": BOOL,
    "func_3d.exact_parity": BOOL,
    # prompt
    "prompt.type": Rule("choice", choices=("box", "click", "mask", "none")),
    "prompt.jitter_px": _num(0),
    "prompt.jitter_frac": _num(0),
    "prompt.n_pos": _int(0),
    "prompt.n_neg": _int(0),
    "prompt.freq": _int(1, null=True),
    "prompt.key_slice": Rule("choice", choices=("largest", "middle")),
    "prompt.empty": Rule("choice", choices=("skip", "negative")),
    # run-level
    "seed": _int(0),
    "model.image_size": _int(32),
    "overwrite": BOOL,
}


def _select(cfg, key: str):
    try:
        return OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)
    except Exception:  # noqa: BLE001 - an unresolvable interpolation is reported where it is used
        return _MISSING


def validate_config(cfg) -> None:
    """Check every option of :data:`RULES` present in ``cfg`` (and ``optim.betas``/param-group lrs).

    Raises:
        ValueError: ``<option>: expected <what>, got <value>`` for the first bad option, or an option added
            with ``+key=value`` that nothing reads (:func:`check_added_keys`).
    """
    check_added_keys(cfg)
    for key, rule in RULES.items():
        v = _select(cfg, key)
        if v is _MISSING:
            continue
        if not rule.ok(v):
            raise ValueError(f"{key}: expected {rule.expected()}, got {v!r}")
    betas = _select(cfg, "optim.betas")
    if betas is not _MISSING and betas is not None:
        betas = OmegaConf.to_container(betas) if OmegaConf.is_config(betas) else betas
        vals = list(betas) if isinstance(betas, (list, tuple)) else [betas]
        beta = _num(0, 1, hi_open=True)
        if len(vals) != 2 or not all(beta.ok(b) for b in vals):
            raise ValueError(f"optim.betas: expected 2 numbers in [0, 1), got {betas!r}")
    groups = _select(cfg, "optim.param_groups")
    for i, g in enumerate(groups if groups not in (_MISSING, None) else []):
        lr = g.get("lr", None) if hasattr(g, "get") else None
        if lr is not None and not POSITIVE.ok(lr):
            raise ValueError(f"optim.param_groups[{i}].lr: expected {POSITIVE.expected()}, got {lr!r}")


def check_added_keys(cfg) -> None:
    """Refuse an option added with ``+key=value`` (``hydra.overrides.task``) that no config declares.

    Hydra adds any ``+key`` without a word: ``+optimm=sgd`` (Hydra's own suggestion after a group-name
    typo) would train with AdamW and keep a stray ``optimm: sgd``; ``+trainer.max_epoch=3`` would train
    for ``trainer.max_epochs``. Allowed: config groups (``+arm=...``, in ``hydra.runtime.choices``) and keys
    under a node with ``_target_`` (constructor arguments, checked by the constructor), e.g.
    ``+dataset.min_size=4``; ``++key=value`` (forced) is left alone.

    Raises:
        ValueError: ``+<key>=<value>: unknown option '<key>' (did you mean '<closest>'? ...)``.
    """
    import difflib

    overrides = _select(cfg, "hydra.overrides.task")
    if overrides is _MISSING or not overrides:
        return
    choices = _select(cfg, "hydra.runtime.choices")
    groups = set(choices.keys()) if choices is not _MISSING and choices is not None else set()
    added = [str(o) for o in overrides if str(o).startswith("+") and not str(o).startswith("++")]
    added_keys = {o[1:].split("=", 1)[0] for o in added}
    for o in added:
        key = o[1:].split("=", 1)[0]
        if key in groups or key.split("@", 1)[0] in groups or _select(cfg, key) is _MISSING:
            continue
        parent_key, _, name = key.rpartition(".")
        parent = cfg if not parent_key else _select(cfg, parent_key)
        if parent is _MISSING or not OmegaConf.is_dict(parent) or "_target_" in parent:
            continue
        known = [
            k for k in parent.keys() if f"{parent_key}.{k}".lstrip(".") not in added_keys and k != "hydra"
        ]
        if not parent_key:
            known += [g for g in groups if "/" not in g]
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        where = f"'{parent_key}'" if parent_key else "the root config"
        hint = f"did you mean '{(parent_key + '.' if parent_key else '') + close[0]}'?" if close else ""
        if close and not parent_key and close[0] in groups:
            hint += f" a config group is chosen with {close[0]}={o.split('=', 1)[1]}"
        raise ValueError(
            f"{o}: unknown option '{key}', not in {where}"
            + (f" ({hint.strip()})" if hint else "")
            + "; ++key=value forces a new key"
        )


from medseg.train.checkpoint import RESUME_KEYS, check_resume_model  # noqa: E402,F401  (re-exported)
