"""Typed options with ranges: the one place an option's type, default and allowed values are written.

Every configurable object of the suite is a dataclass (:mod:`medseg.schema`, :class:`medseg.data.prompts.
PromptConfig`). Its fields carry their default, their type (checked by OmegaConf when Hydra composes) and,
through :func:`opt`, a :class:`Rule` for what the type cannot say (``>= 1``, ``one of box, click``, ``int or
'auto'``). :func:`check_options` walks a composed config (or a dataclass instance) and checks every rule::

    max_epochs: int = opt(10, ge=1)     # -> "trainer.max_epochs: expected an integer >= 1, got 0"

No imports beyond the standard library and OmegaConf, so every layer may use it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Rule", "check_options", "opt", "rule_of"]


@dataclass(frozen=True)
class Rule:
    """``kind``: int | float | bool | choice | pair; ``lo``/``hi`` bounds (``lo_open``/``hi_open``: strict);
    ``null``: None allowed; ``choices``: the values of a ``choice`` (and extra words an int/float option
    accepts, e.g. ``"auto"``); ``pair``: two numbers each within the bounds."""

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
            text = {"int": "an integer", "float": "a number", "pair": "2 numbers"}[self.kind]
            if self.lo is not None and self.hi is not None:
                lb, rb = "(" if self.lo_open else "[", ")" if self.hi_open else "]"
                text += f" in {lb}{self.lo:g}, {self.hi:g}{rb}"
            elif self.lo is not None:
                text += f" {'>' if self.lo_open else '>='} {self.lo:g}"
            if self.choices:
                text += " or " + " or ".join(map(str, self.choices))
        return text + (" or null" if self.null else "")

    def _number_ok(self, v: Any, kind: str) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if kind == "int" and not isinstance(v, int):
            return False
        if not math.isfinite(v):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))

    def ok(self, v: Any) -> bool:
        if v is None:
            return self.null
        if self.kind == "bool":
            return isinstance(v, bool)
        if self.kind == "choice" or (self.choices and v in self.choices):
            return v in self.choices
        if self.kind == "pair":
            vals = list(v) if isinstance(v, (list, tuple)) else [v]
            return len(vals) == 2 and all(self._number_ok(x, "float") for x in vals)
        return self._number_ok(v, self.kind)


def opt(
    default: Any = dataclasses.MISSING,
    *,
    factory: Any = None,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    lt: float | None = None,
    kind: str | None = None,
    choices: tuple[Any, ...] = (),
    null: bool = False,
) -> Any:
    """A dataclass field with its default (or ``factory`` for lists/dicts) and its :class:`Rule`.

    ``kind`` defaults to ``choice`` when only ``choices`` are given, ``bool`` for a bool default, ``int``
    for an int default and ``float`` otherwise; ``null=True`` allows None (implied by a None default).
    """
    if kind is None:
        sample = default if default is not dataclasses.MISSING else None
        if choices and ge is None and gt is None:
            kind = "choice"
        elif isinstance(sample, bool):
            kind = "bool"
        elif isinstance(sample, int):
            kind = "int"
        else:
            kind = "float"
    lo, lo_open = (gt, True) if gt is not None else (ge, False)
    hi, hi_open = (lt, True) if lt is not None else (le, False)
    rule = Rule(kind, lo, hi, lo_open, hi_open, null or default is None, tuple(choices))
    if factory is not None:
        return field(default_factory=factory, metadata={"rule": rule})
    return field(default=default, metadata={"rule": rule})


def rule_of(f: dataclasses.Field) -> Rule | None:
    return f.metadata.get("rule") if f.metadata else None


def _schema_of(node: Any):
    """The dataclass behind ``node`` (a structured DictConfig or a dataclass instance), else None."""
    if dataclasses.is_dataclass(node) and not isinstance(node, type):
        return type(node)
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(node, DictConfig):
            t = OmegaConf.get_type(node)
            return t if t is not None and dataclasses.is_dataclass(t) else None
    except Exception:  # noqa: BLE001 - an unresolvable node is reported where it is used
        return None
    return None


def _children(node: Any):
    from omegaconf import DictConfig, ListConfig

    if isinstance(node, DictConfig):
        for k in node.keys():
            if k == "hydra" and node._get_parent() is None:  # Hydra's own settings at the root: not options
                continue
            child = node._get_node(k)
            # an interpolation is checked where it points (e.g. a model's options: ${oc.select:func_2d})
            if child is not None and child._is_interpolation():
                continue
            try:
                yield str(k), node[k]
            except Exception:  # noqa: BLE001 - an unresolvable interpolation is reported where it is used
                continue
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            try:
                yield f"[{i}]", node[i]
            except Exception:  # noqa: BLE001
                continue
    elif dataclasses.is_dataclass(node) and not isinstance(node, type):
        for f in dataclasses.fields(node):
            yield f.name, getattr(node, f.name)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield f"[{i}]", v


def check_options(node: Any, prefix: str = "") -> None:
    """Check every :class:`Rule` of every dataclass-typed node in ``node`` (recursively, lists too).

    Raises:
        ValueError: ``<prefix.option>: expected <what>, got <value>`` for the first bad option.
    """
    from omegaconf import OmegaConf

    schema = _schema_of(node)
    rules = {f.name: rule_of(f) for f in dataclasses.fields(schema)} if schema is not None else {}
    for key, value in _children(node):
        path = f"{prefix}{key}" if key.startswith("[") or not prefix else f"{prefix}.{key}"
        rule = rules.get(key)
        if rule is not None:
            plain = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            if not rule.ok(plain):
                raise ValueError(f"{path}: expected {rule.expected()}, got {plain!r}")
        if OmegaConf.is_config(value) or dataclasses.is_dataclass(value) or isinstance(value, (list, tuple)):
            check_options(value, path)
