"""Open a user's weights file without ever running code from it.

Checkpoints written by ``torch.save`` are pickles, and a pickle can call any function while it loads
(``__reduce__`` -> ``os.system``). Files of this suite and Meta's SAM2 files hold only tensors and
containers, so they are read with ``torch.load(weights_only=True)``. Libraries that pickle whole model
objects (ultralytics' YOLO ``.pt``) load with ``weights_only=False``; such a file is first checked here,
before the library sees it, by loading it once with torch's restricted unpickler (never with
``weights_only=False``).

Why allowing a class is not enough. A pickle can name a class and then *call* it (opcode ``REDUCE``,
``cls(*args)``): an allowed class whose constructor opens files is a gadget. ``ultralytics``'
``AutoBackend(path)`` unpickles ``path`` with ``weights_only=False``, so "every ``nn.Module`` of a trusted
package" ran a second file's code inside the check itself; even the model containers
(``SegmentationModel(cfg)``) read a yaml and build layers when called. ``torch.save`` never calls a
module class: an ``nn.Module`` is pickled as ``NEWOBJ`` (``cls.__new__(cls)``, which is ``object.__new__``)
followed by ``BUILD`` (``__setstate__(state)``, which stores the saved attributes). So:

* only an explicit allow-list of globals may appear (:func:`_allowed`): ``nn.Module`` layer classes of
  ``torch.nn.modules.*`` and ``ultralytics.nn.modules.*``, the model containers of ``ultralytics.nn.tasks``
  (subclasses of its ``BaseModel``: ``DetectionModel``, ``SegmentationModel`` ...), and a few plain value
  types (:data:`VALUE_GLOBALS`; their constructors only store values). Everything else is refused by
  name: ``ultralytics.nn.autobackend.AutoBackend``, functions, any other class;
* a module class must use ``object.__new__`` and inherit ``__setstate__`` only from those same packages
  (all of which store attributes and fill defaults, nothing more);
* ``builtins.getattr`` is allowed only as a method lookup on a model (``forward``/``forward_fuse``:
  official YOLOv8/YOLO11 segment files pickle the bound ``Detect.forward``); the name is a class
  attribute, read from the class, so no ``__getattr__`` runs; any other lookup is refused;
* during the restricted load each module class is replaced by a stand-in subclass whose metaclass
  refuses to be called, so ``cls.__new__`` + ``__setstate__`` work while any call of the class (a
  ``REDUCE``, or a call hidden in an allowed rebuild function such as
  ``torch._tensor._rebuild_from_type_v2``) is refused, naming the class.

When the check passes, the library's own ``torch.load`` replays the very same opcodes: allowed globals
only, no model constructor, the same ``__setstate__`` calls; no other code can run.

Every refusal is one line that names the file (:class:`UnsafeFileError`, a ``ValueError``).
"""

from __future__ import annotations

import functools
import importlib
import pickle
from pathlib import Path

import torch

__all__ = ["UnsafeFileError", "check_model_pickle", "sniff_torch_file"]

ZIP_MAGIC = b"PK\x03\x04"  # torch.save (zip format, the default since torch 1.6)
PICKLE_MAGIC = b"\x80"  # legacy torch.save / raw pickle (protocol >= 2)
# packages whose nn.Module classes (layers) a model file may name; nothing else of ultralytics
MODULE_PACKAGES = ("torch.nn.modules.", "ultralytics.nn.modules.")
CONTAINER_MODULE = "ultralytics.nn.tasks"  # the model containers: subclasses of its BaseModel
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


METHOD_LOOKUPS = frozenset({"forward", "forward_fuse"})  # the bound methods official YOLO files pickle


class _CalledClass(Exception):
    """A pickle called a model class instead of restoring it from its saved state."""


def _is_model_class(obj: object, module: str) -> bool:
    """An allow-listed ``nn.Module`` layer or container class (see the module docstring)."""
    if not (isinstance(obj, type) and issubclass(obj, torch.nn.Module) and obj.__module__ == module):
        return False
    if module == CONTAINER_MODULE:
        base = getattr(importlib.import_module(CONTAINER_MODULE), "BaseModel", None)
        if not (isinstance(base, type) and issubclass(obj, base)):
            return False
    elif not module.startswith(MODULE_PACKAGES):
        return False
    if obj.__new__ is not object.__new__ or type(obj) is not type:
        return False
    restorers = [k.__module__ for k in obj.__mro__ if "__setstate__" in vars(k)]
    return all(m.startswith(MODULE_PACKAGES) or m == CONTAINER_MODULE for m in restorers)


@functools.cache
def _stand_in(cls: type, name: str) -> type:
    """A subclass of ``cls`` that can be restored (``__new__`` + ``__setstate__``) but never called."""

    def refuse(_cls, *args, **kwargs):
        raise _CalledClass(f"it calls {name}(...); a model class may only be restored from its saved state")

    meta = type("_NotCallable", (type,), {"__call__": refuse})
    return meta(cls.__name__, (cls,), {"__module__": cls.__module__, "__qualname__": cls.__qualname__})


def _method_lookup(obj: object, name: str, *default: object) -> object:
    """``builtins.getattr`` during the check: a model's ``forward``/``forward_fuse``, nothing else."""
    cls = obj if isinstance(obj, type) else type(obj)
    if not default and name in METHOD_LOOKUPS and issubclass(cls, torch.nn.Module):
        attr = getattr(cls, name)  # from the class: no instance __getattr__ runs
        return attr if obj is cls else attr.__get__(obj, cls)
    raise _CalledClass(f"it calls getattr({cls.__name__}, {name!r}); only a model's forward may be looked up")


def _allowed(name: str, dtypes: set[str]) -> object | None:
    """What the restricted load may use for the pickle global ``name``; None if it is not allow-listed."""
    if name == "builtins.getattr":
        return (_method_lookup, name)
    module, _, attr = name.rpartition(".")
    if (
        name not in VALUE_GLOBALS
        and name not in dtypes
        and not (module.startswith(MODULE_PACKAGES) or module == CONTAINER_MODULE)
    ):
        return None
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError):
        return None
    if name in VALUE_GLOBALS or name in dtypes:
        return obj
    return (_stand_in(obj, name), name) if _is_model_class(obj, module) else None


def check_model_pickle(path: str | Path, key: str = "weights") -> Path:
    """Refuse a pickled model file that would run code; returns ``path`` when it is safe to hand on.

    Only the allow-listed layer/model classes, tensors, containers and plain values may appear, and a
    model class may only be restored, never called (see the module docstring). The whole file is loaded
    once with torch's restricted unpickler, so a global hidden from the scan still cannot run.

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
                f"{path}: refused: {key} would run code when loaded ({name} is not an allowed model "
                "class or plain value); only weights and the layer/model classes of torch.nn and "
                "ultralytics.nn are accepted"
            )
        allowed.append(obj)
    try:
        with torch.serialization.safe_globals(allowed):
            torch.load(path, map_location="cpu", weights_only=True)
    except _CalledClass as e:
        raise UnsafeFileError(f"{path}: refused: {key} would run code when loaded ({e})") from None
    except pickle.UnpicklingError as e:
        raise UnsafeFileError(
            f"{path}: refused: {key} would run code when loaded ({_first_line(e)})"
        ) from None
    except Exception as e:  # noqa: BLE001 - truncated or corrupt
        raise UnsafeFileError(f"{path}: {key} is not a readable PyTorch file ({_first_line(e)})") from None
    return path
