"""Entry-point helpers: one clear line for a user's mistake instead of a traceback."""

from __future__ import annotations

import functools
import os
import sys

from hydra.errors import InstantiationException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, MissingMandatoryValue

from medseg.errors import PeerFailed, StorageError
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
