"""Entry-point helpers: one clear line for a user's mistake instead of a traceback."""

from __future__ import annotations

import functools
import os
import sys

from hydra.errors import InstantiationException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue

from medseg.eval.sweep import register_resolvers

EXIT_USER_ERROR = 2  # a user's mistake (bad option, file, folder): one line, exit 2, like a usage error

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
        except errors as e:
            if os.environ.get("SAM2MED_TRACEBACK"):
                raise
            exit_with_error(e)
        except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback (the engine saves what it can first)
            if os.environ.get("SAM2MED_TRACEBACK"):
                raise
            print("interrupted (Ctrl-C)", file=sys.stderr, flush=True)
            sys.exit(130)

    return wrapper


def exit_with_error(e: BaseException, code: int = EXIT_USER_ERROR):
    """Print ``error: <first line of e>`` on stderr and exit with ``code`` (no traceback)."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if isinstance(e, KeyError):
        msg = f"missing key {msg}"
    print(f"error: {msg}", file=sys.stderr, flush=True)
    sys.exit(code)
