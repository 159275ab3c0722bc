"""Process-level choices made once: device, seeds, determinism, distributed setup, atomic files."""

from __future__ import annotations

import logging
import os
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

log = logging.getLogger(__name__)
_OWN_GROUP = False  # init_distributed created the process group (finish_distributed closes only that one)


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` -> cuda, then mps, then cpu; otherwise the named device (checked to exist)."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ValueError(
            f"trainer.device={name!r} is not a device: use auto, cpu, cuda, cuda:N or mps"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"trainer.device={name!r} but CUDA is not available here (use trainer.device=auto or cpu)"
        )
    if dev.type == "cuda" and dev.index is None and "LOCAL_RANK" in os.environ:
        dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return dev


def seed_everything(seed: int, deterministic: bool = False) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def rng_state() -> dict:
    """All RNG states as tensors/plain types (loadable with ``weights_only=True``)."""
    np_state = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group described by torchrun's variables (gloo on CPU, nccl on CUDA; under SLURM
    or submitit :func:`medseg.train.distributed.export_cluster_env` sets them first); no-op when run alone."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend)
        global _OWN_GROUP
        _OWN_GROUP = True
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))


def finish_distributed() -> bool:
    """Close the process group :func:`init_distributed` opened, at the end of a run that succeeded.

    Every rank waits for the others first (a barrier), so no process tears its gloo/NCCL connections
    down while a peer is still writing its last files or in a collective; a process that exits with the
    group still up can abort in the communication library's destructor ("terminate called without an
    active exception", seen on a loaded CI machine). A group the caller opened itself is left alone.
    Returns whether a group was closed.
    """
    global _OWN_GROUP
    if not (_OWN_GROUP and dist.is_available() and dist.is_initialized()):
        return False
    dist.barrier()
    dist.destroy_process_group()
    _OWN_GROUP = False
    log.info("process group closed")
    return True


def temp_file_beside(path: Path) -> tuple[int, str]:
    """A temporary file in ``path``'s folder (created); a folder that cannot be written is one line."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        from medseg.errors import StorageError

        raise StorageError(f"{path}: cannot write in {path.parent} ({e.strerror or e})") from None


def atomic_write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    fd, tmp = temp_file_beside(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:  # disk full, read-only: one line naming the file (a user error), not a traceback
        Path(tmp).unlink(missing_ok=True)
        from medseg.errors import StorageError

        free = shutil.disk_usage(path.parent).free / 2**30
        raise StorageError(
            f"{path}: could not write ({e.strerror or e}); {free:.2f} GiB free in {path.parent}"
            + (f"; the previous {path.name} is untouched" if path.exists() else "")
        ) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def resolve_batch_size(cfg, mode: str) -> int:
    """``trainer.batch_size``, or with ``auto`` the entry of ``trainer.batch_table[mode]`` for the model's
    Hiera size and image size (``conf/trainer/high_memory.yaml``, derived by bench/memory_presets.py).

    Keys are ``<size>@<px>`` (size t | s | b+ | l from ``model.variant``). An image size between table
    sizes takes the next larger one (it needs no more memory than that); above the largest the batch
    shrinks with the pixel count. Models without a Hiera variant use ``trainer.batch_fallback``.
    """
    from omegaconf import OmegaConf

    value = cfg.trainer.batch_size
    if str(value) != "auto":
        try:
            n = int(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"trainer.batch_size: expected a positive integer or auto, got {value!r}"
            ) from None
        if n < 1:
            raise ValueError(f"trainer.batch_size: expected a positive integer or auto, got {value!r}")
        return n
    table = OmegaConf.select(cfg, f"trainer.batch_table.{mode}")
    fallback = int(cfg.trainer.batch_fallback)
    variant = str(OmegaConf.select(cfg, "model.variant", default="") or "")
    size_key = variant.rsplit("_", 1)[-1] if "hiera" in variant else None
    if not table or size_key is None:
        return fallback
    px = int(cfg.model.image_size)
    sizes = sorted(int(k.split("@")[1]) for k in table if k.startswith(f"{size_key}@"))
    if not sizes:
        return fallback
    above = [s for s in sizes if s >= px]
    if above:
        return int(table[f"{size_key}@{above[0]}"])
    top = sizes[-1]
    return max(1, int(table[f"{size_key}@{top}"] * (top / px) ** 2))
