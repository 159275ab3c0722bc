"""Which parameters train, for every model family: presets/patterns -> ``requires_grad``, optimizer groups
by name pattern (``optim.param_groups``), and the trainable/frozen table every run prints. Model families
only supply their preset tables (e.g. :data:`sam2_train.trainable.PRESETS`)."""

from __future__ import annotations

from collections import OrderedDict
from fnmatch import fnmatch

import torch


def apply_trainable(
    model: torch.nn.Module, trainable: str | list[str], presets: dict[str, list[str]]
) -> None:
    """Set ``requires_grad`` from a preset name or a list of name patterns (fnmatch).

    Args:
        presets: the model family's preset table (``{name: [patterns that stay trainable]}``).

    Raises:
        ValueError: unknown preset, or patterns that match no parameter.
    """
    if isinstance(trainable, str):
        if trainable not in presets:
            raise ValueError(
                f"model.trainable={trainable!r} is not a preset; choose one of {sorted(presets)} "
                "or give a list of parameter-name patterns"
            )
        patterns = presets[trainable]
    else:
        patterns = list(trainable)
        names = [n for n, _ in model.named_parameters()]
        for p in patterns:
            if not any(fnmatch(n, p) for n in names):
                raise ValueError(f"model.trainable pattern {p!r} matches no parameter")
    for name, param in model.named_parameters():
        param.requires_grad_(any(fnmatch(name, p) for p in patterns))


def param_groups(model: torch.nn.Module, base_lr: float, weight_decay: float, groups: list[dict] | None):
    """Split trainable parameters into optimizer groups by name pattern (first match wins).

    Args:
        groups: ``[{"pattern": "image_encoder.*", "lr": 1e-5, "weight_decay": ...}, ...]``.

    Returns:
        list of dicts for ``torch.optim`` with a ``name`` key each (for logging).
    """
    groups = [dict(g) for g in (groups or [])]
    for g in groups:
        if "pattern" not in g:
            raise ValueError(f"optim.param_groups entry {g} has no 'pattern'")
    buckets: OrderedDict[str, list] = OrderedDict((g["pattern"], []) for g in groups)
    rest = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        for g in groups:
            if fnmatch(name, g["pattern"]):
                buckets[g["pattern"]].append(param)
                break
        else:
            rest.append(param)
    out = []
    for g in groups:
        if buckets[g["pattern"]]:
            out.append(
                {
                    "name": g["pattern"],
                    "params": buckets[g["pattern"]],
                    # a key left out (or null, as the schema writes it) takes the optimizer's value
                    "lr": float(base_lr if g.get("lr") is None else g["lr"]),
                    "weight_decay": float(
                        weight_decay if g.get("weight_decay") is None else g["weight_decay"]
                    ),
                }
            )
    if rest:
        out.append(
            {"name": "default", "params": rest, "lr": float(base_lr), "weight_decay": float(weight_decay)}
        )
    if not out:
        raise ValueError("no trainable parameters: check model.trainable")
    return out


def trainable_table(model: torch.nn.Module, depth: int = 1) -> str:
    """A text table of trainable / frozen parameter counts per top-level module."""
    rows: OrderedDict[str, list[int]] = OrderedDict()
    for name, p in model.named_parameters():
        key = ".".join(name.split(".")[:depth])
        r = rows.setdefault(key, [0, 0])
        r[0 if p.requires_grad else 1] += p.numel()
    width = max([len(k) for k in rows] + [6])
    lines = [f"{'module':<{width}}  {'trainable':>12}  {'frozen':>12}"]
    for k, (t, f) in rows.items():
        lines.append(f"{k:<{width}}  {t:>12,}  {f:>12,}")
    tt = sum(r[0] for r in rows.values())
    ff = sum(r[1] for r in rows.values())
    lines.append(f"{'total':<{width}}  {tt:>12,}  {ff:>12,}")
    return "\n".join(lines)
