"""Entry-point helpers: one clear line for a user's mistake instead of a traceback."""

from __future__ import annotations

import functools
import os
import sys

from hydra.errors import InstantiationException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue

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
)


def user_errors_as_one_line(fn):
    """Wrap a Hydra task function: known user errors print ``error: <message>`` and exit 1.

    Set ``SAM2MED_TRACEBACK=1`` to see the full traceback instead.
    """
    from medseg.engine import TrainingError
    from sam2_train.checkpoint import CheckpointError

    errors = USER_ERRORS + (CheckpointError, TrainingError)

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
        except errors as e:
            if os.environ.get("SAM2MED_TRACEBACK"):
                raise
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            if isinstance(e, KeyError):
                msg = f"missing key {msg}"
            print(f"error: {msg}", file=sys.stderr, flush=True)
            sys.exit(1)

    return wrapper
