"""Entry-point helpers: one clear line for a user's mistake instead of a traceback."""

from __future__ import annotations

import difflib
import functools
import os
import sys
from pathlib import Path

from hydra.errors import InstantiationException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue

from medseg.errors import PeerFailed, StorageError
from medseg.eval.sweep import register_resolvers

EXIT_USER_ERROR = 2  # a user's mistake (bad option, file, folder): one line, exit 2, like a usage error


def _hydra_config_error_line(ex: BaseException) -> str:
    """Hydra's several-line composition error (an override typo, an unknown group option) as one line.

    Hydra's hint "To append to your config use +key=value" is dropped: an added key that no config
    declares is refused by :func:`medseg.run.config_check.check_added_keys` anyway.
    """
    typed = _schema_type_error(ex.__cause__)
    if typed:
        return typed
    parts = [str(ex)]
    if ex.__cause__ is not None and str(ex.__cause__) not in parts[0]:
        parts.append(str(ex.__cause__))
    lines = []
    for text in parts:
        for ln in text.split("Config search path:")[0].splitlines():
            ln = ln.strip()
            if not ln or ln.startswith(("To append to your config use", "full_key:", "object_type=")):
                continue
            lines.append(ln)
    msg = "; ".join(lines).replace(":;", ":").replace(".;", ";").rstrip(".;")
    msg = msg.replace("Available options in", "available options in")
    cause = ex.__cause__
    parent, key = getattr(cause, "parent_node", None), getattr(cause, "key", None)
    if key is not None and hasattr(parent, "keys"):  # a typo in an option name: the closest one
        close = difflib.get_close_matches(str(key), [str(k) for k in parent.keys()], n=1)
        if close and close[0] != str(key):
            msg += f" (did you mean {close[0]}?)"
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else "the script"
    return f"{msg}; `python {script} --help` lists the config groups and their options"


def _schema_type_error(cause: BaseException | None) -> str | None:
    """``<option>: expected <what>, got <value>`` for a value OmegaConf could not convert to the type of a
    schema field (:mod:`medseg.schema`), worded as :func:`medseg.options.check_options` words a range."""
    import dataclasses

    from medseg.options import rule_of

    schema, key = getattr(cause, "object_type", None), getattr(cause, "key", None)
    if schema is None or key is None or not dataclasses.is_dataclass(schema):
        return None
    fields = {f.name: f for f in dataclasses.fields(schema)}
    rule = rule_of(fields[str(key)]) if str(key) in fields else None
    if rule is None:
        return None
    value = getattr(cause, "value", None)
    full_key = getattr(cause, "full_key", None) or str(key)
    return f"{full_key}: expected {rule.expected()}, got {value!r}"


def _reraise(ex: BaseException):
    raise ex


def exit_with_composition_error(ex: BaseException):
    """Print Hydra's composition error ``ex`` as one ``error:`` line and exit 2 (what the entry points do
    for a typo, a wrong type or an unknown key in an override)."""
    print(f"error: {_hydra_config_error_line(ex)}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USER_ERROR)


def one_line_hydra_errors() -> None:
    """Make Hydra's own config-composition errors one ``error:`` line with exit status 2, like every other
    user error (``HYDRA_FULL_ERROR=1`` or ``SAM2MED_TRACEBACK=1`` keep Hydra's report). Errors raised by the
    job itself are not Hydra's composition errors and keep their own handling."""
    import hydra._internal.utils as hydra_utils
    from hydra.errors import CompactHydraException

    original = hydra_utils.run_and_report
    if getattr(original, "_one_line", False):
        return

    def run_and_report(func):
        if os.environ.get("HYDRA_FULL_ERROR") or os.environ.get("SAM2MED_TRACEBACK"):
            return original(func)
        try:
            return func()
        except CompactHydraException as ex:
            exit_with_composition_error(ex)
        except Exception as ex:  # noqa: BLE001 - Hydra's own report for everything else
            return original(functools.partial(_reraise, ex))

    run_and_report._one_line = True
    hydra_utils.run_and_report = run_and_report


one_line_hydra_errors()  # before @hydra.main composes: a typo in an override is one line, exit 2
register_resolvers()  # before @hydra.main composes: conf/hydra/default.yaml names sweep job folders with it

USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    FileExistsError,
    NotADirectoryError,
    PermissionError,
    KeyError,
    MissingMandatoryValue,
    ConfigAttributeError,
    ConfigKeyError,
    StorageError,  # a file of the run could not be written (disk full, read-only): names the file
)


def user_errors_as_one_line(fn):
    """Wrap a Hydra task function: known user errors print ``error: <message>`` and exit 2.

    Set ``SAM2MED_TRACEBACK=1`` to see the full traceback instead.
    """
    from medseg.errors import MissingExtraError
    from medseg.train.checkpoint import CheckpointError
    from medseg.train.engine import TrainingError

    errors = USER_ERRORS + (CheckpointError, TrainingError, MissingExtraError)

    from medseg.train.preemption import RunInterrupted

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            try:
                return fn(*args, **kwargs)
            except InstantiationException as e:  # hydra wraps errors raised by a config's _target_
                cause = e.__cause__
                if isinstance(cause, errors):
                    raise cause from None
                raise
        except RunInterrupted as e:  # checkpoint written and the line printed: exit as the signal would
            sys.exit(128 + e.signum)
        except PeerFailed:  # another rank stopped on a user error and printed the one line
            sys.exit(EXIT_USER_ERROR)
        except errors as e:
            if os.environ.get("SAM2MED_TRACEBACK"):
                raise
            if _rank_zero_prints():
                sys.exit(EXIT_USER_ERROR)
            exit_with_error(e)
        except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback (the engine saves what it can first)
            if os.environ.get("SAM2MED_TRACEBACK"):
                raise
            print("interrupted (Ctrl-C)", file=sys.stderr, flush=True)
            sys.exit(130)

    return wrapper


def _rank_zero_prints() -> bool:
    """True in a process of a distributed run other than rank 0, before the process group exists: every
    process checks the same config the same way there, and rank 0 prints the one line for all of them."""
    import torch.distributed as dist

    from medseg.train.distributed import launcher_rank

    return launcher_rank() > 0 and not (dist.is_available() and dist.is_initialized())


def exit_with_error(e: BaseException, code: int = EXIT_USER_ERROR):
    """Print ``error: <first line of e>`` on stderr and exit with ``code`` (no traceback)."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, KeyError):
        msg = f"missing key {msg}"
    print(f"error: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)
