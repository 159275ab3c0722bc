"""Config checks run right after Hydra composes, before anything is built or written.

The type, default and range of every option live in one place, the schemas (:mod:`medseg.schema`,
:class:`medseg.data.prompts.PromptConfig`): OmegaConf refuses a wrong type or an unknown key while Hydra
composes; :func:`validate_config` then checks every field's :class:`medseg.options.Rule` and refuses an
option added with ``+key=value`` that nothing reads (Hydra adds those even to a typed node)::

    optim.lr: expected a number > 0, got -1.0
    trainer.val_freq: expected an integer >= 1, got 0
"""

from __future__ import annotations

from omegaconf import OmegaConf

from medseg.options import check_options

__all__ = ["check_added_keys", "validate_config"]
_MISSING = object()


def _select(cfg, key: str):
    try:
        return OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)
    except Exception:  # noqa: BLE001 - an unresolvable interpolation is reported where it is used
        return _MISSING


def validate_config(cfg) -> None:
    """Refuse an added key nothing reads (:func:`check_added_keys`), then check every option's rule.

    Raises:
        ValueError: ``<option>: expected <what>, got <value>`` for the first bad option.
    """
    check_added_keys(cfg)
    check_options(cfg)


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
