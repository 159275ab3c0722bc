"""Open a user's weights file without ever running code from it.

Checkpoints written by ``torch.save`` are pickles, and a pickle can call any function while it loads
(``__reduce__`` -> ``os.system``). Files of this suite and Meta's SAM2 files hold only tensors and
containers, so they are read with ``torch.load(weights_only=True)``. Libraries that pickle whole model
objects (ultralytics' YOLO ``.pt``) load with ``weights_only=False``; such a file is first checked here
with torch's restricted unpickler, allowing only the model classes of trusted packages (``nn.Module``
subclasses of ``torch.nn`` and ``ultralytics``) and a few plain value types, before the library sees it.

Every refusal is one line that names the file (:class:`UnsafeFileError`, a ``ValueError``).
"""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path

import torch

__all__ = ["UnsafeFileError", "check_model_pickle", "sniff_torch_file"]

ZIP_MAGIC = b"PK\x03\x04"  # torch.save (zip format, the default since torch 1.6)
PICKLE_MAGIC = b"\x80"  # legacy torch.save / raw pickle (protocol >= 2)
TRUSTED_PREFIXES = ("torch.nn.modules.", "ultralytics.")
# plain value types ultralytics stores beside the model (training arguments, metrics, dates)
VALUE_GLOBALS = frozenset(
    {
        "ultralytics.utils.IterableSimpleNamespace",
        "types.SimpleNamespace",
        "pathlib.PosixPath",
        "pathlib.WindowsPath",
        "numpy.core.multiarray.scalar",
        "numpy._core.multiarray.scalar",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy.ndarray",
        "numpy.dtype",
    }
)


class UnsafeFileError(ValueError):
    """A weights file that is not a torch file, or that would run code when loaded; names the file."""


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:160]


def sniff_torch_file(path: str | Path, key: str = "checkpoint") -> Path:
    """Check that ``path`` exists and starts like a file written by ``torch.save``; returns it.

    Raises:
        FileNotFoundError: no such file.
        UnsafeFileError: empty, or another kind of file (e.g. text), named with its first bytes.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {key} file not found")
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise UnsafeFileError(f"{path}: {key} file is empty (0 bytes)")
    if not (head.startswith(ZIP_MAGIC) or head.startswith(PICKLE_MAGIC)):
        kind = "a text file" if all(32 <= b < 127 or b in (9, 10, 13) for b in head) else "another format"
        raise UnsafeFileError(
            f"{path}: {key} is not a PyTorch weights file (it starts with {head[:12]!r}: {kind})"
        )
    return path


def _allowed(name: str, dtypes: set[str]) -> object | None:
    """The object a pickle global names, if loading it cannot run code; else None."""
    module, _, attr = name.rpartition(".")
    if name not in VALUE_GLOBALS and not module.startswith(TRUSTED_PREFIXES) and name not in dtypes:
        return None
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return None
    if name in VALUE_GLOBALS or name in dtypes:
        return obj
    return obj if isinstance(obj, type) and issubclass(obj, torch.nn.Module) else None


def check_model_pickle(path: str | Path, key: str = "weights") -> Path:
    """Refuse a pickled model file that would run code; returns ``path`` when it is safe to hand on.

    Only ``nn.Module`` classes of ``torch.nn`` / ``ultralytics``, tensors, containers and plain values
    may appear. The whole file is then loaded once with torch's restricted unpickler, so a global hidden
    from the scan still cannot run.

    Raises:
        FileNotFoundError, UnsafeFileError: one line naming ``path`` (and the refused global).
    """
    path = sniff_torch_file(path, key)
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as e:  # noqa: BLE001 - corrupt zip, truncated pickle ...
        raise UnsafeFileError(f"{path}: {key} is not a readable PyTorch file ({_first_line(e)})") from None
    dtypes = {n for n in names if n.startswith("numpy.dtypes.")}
    allowed = []
    for name in names:
        obj = _allowed(name, dtypes)
        if obj is None:
            raise UnsafeFileError(
                f"{path}: refused: {key} would run code when loaded ({name} is not a model class or "
                "plain value); only weights and torch/ultralytics model classes are accepted"
            )
        allowed.append(obj)
    try:
        with torch.serialization.safe_globals(allowed):
            torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise UnsafeFileError(
            f"{path}: refused: {key} would run code when loaded ({_first_line(e)})"
        ) from None
    except Exception as e:  # noqa: BLE001 - truncated or corrupt
        raise UnsafeFileError(f"{path}: {key} is not a readable PyTorch file ({_first_line(e)})") from None
    return path
