"""Shared fixtures: the real Hydra configs composed with small overrides, and synthetic data trees
in the real on-disk layouts (written once per session)."""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig

import medseg.run  # noqa: F401  (stores the option schemas the conf/ yaml files build on)
import sam2_train  # noqa: F401  (imports sam2 once and clears its Hydra state)

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# the volume cache of the runs in the tests (and their subprocesses) lives in a temporary folder
if "SAM2_MEDICAL_CACHE" not in os.environ:
    os.environ["SAM2_MEDICAL_CACHE"] = tempfile.mkdtemp(prefix="sam2-medical-cache-")
    atexit.register(shutil.rmtree, os.environ["SAM2_MEDICAL_CACHE"], True)

SMALL = [
    "model.image_size=64",
    "model.checkpoint=null",  # random weights (Meta's files cannot be downloaded here); logged as a WARNING
    "sam2_checkpoint=null",
    "trainer.device=cpu",
    "trainer.num_workers=0",
    "trainer.amp=false",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=2",
    "trainer.batch_size=2",
    "trainer.progress_bar=false",
    "logger.log_images=false",
]
# the same for an entry point run as a subprocess (run_cli, run_torchrun); each test adds its own limits
CLI_SMALL = ["model.image_size=64", "model.checkpoint=null", "trainer.device=cpu", "trainer.num_workers=0"]


def compose_cfg(root: str, overrides: list[str], out_dir: Path):
    """Compose ``conf/<root>.yaml`` with ``overrides`` as Hydra would for a run in ``out_dir``."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(root, overrides=[*overrides, f"hydra.run.dir={out_dir}"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def run_entry(root: str, overrides: list[str], out_dir: Path, *, small: bool = True):
    """Run an entry point in-process (same code as ``python train_2d.py ...``); returns (cfg, result)."""
    from medseg.run.app import run

    cfg = compose_cfg(root, (SMALL if small else []) + overrides, out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    mode = "3d" if root == "train_3d" else "2d"
    return cfg, run(cfg, mode=mode, task_key="task_3d" if mode == "3d" else "task_2d")


def run_cli(
    script: str | Path, *overrides: object, cwd: Path = ROOT, timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``python <script> <overrides...>`` as a user would (``train_2d.py``, ``tools/compare.py``, ...):
    this interpreter, output captured as UTF-8 text (undecodable bytes replaced), ``env`` added to ours."""
    return subprocess.run(
        [sys.executable, str(script), *map(str, overrides)],
        cwd=cwd,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
        env={**os.environ, **(env or {}), "PYTHONUTF8": "1"},
    )


def free_port() -> int:
    """A TCP port free on this machine now (the rendezvous of a test's process group)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_torchrun(
    script: str | Path, *overrides: object, nproc: int = 2, timeout: float = 600, env: dict | None = None
) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --nproc_per_node=<nproc> <script> <overrides...>`` on a free port,
    run and captured as :func:`run_cli` does."""
    torchrun = ["-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={free_port()}"]
    return run_cli(*torchrun, script, *overrides, timeout=timeout, env=env)


def checkpoint_weights(path: Path) -> dict:
    """The model state dict of a checkpoint file (ours or Meta's)."""
    return torch.load(path, map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    from medseg.data import synthetic

    root = tmp_path_factory.mktemp("data")
    synthetic.write_kvasir(root / "kvasir", n=8, size=72)
    synthetic.write_refuge(root / "refuge", n=6, size=64)
    synthetic.write_nnunet(root / "nnunet", n_cases=4, depth=8, size=48, n_organs=2)
    synthetic.write_btcv(root / "btcv", n_cases=3, depth=8, size=48)
    synthetic.write_npz(root / "npz", n_cases=3, depth=8, size=48)
    synthetic.write_folder2d(root / "folder2d", n=6, size=64)
    return root


@pytest.fixture(scope="module")
def meta_ckpt(tmp_path_factory) -> Path:
    """A checkpoint in Meta's layout (``{"model": state_dict}``): Hiera-T, 64 px, random weights (seed 0)."""
    from sam2_train import build_sam2_model

    path = tmp_path_factory.mktemp("meta") / "sam2.1_tiny_like.pt"
    torch.manual_seed(0)
    torch.save({"model": build_sam2_model("sam2.1_hiera_t", image_size=64).state_dict()}, path)
    return path


@pytest.fixture
def kvasir(tmp_path) -> Path:
    """A fresh Kvasir-layout dataset of 6 images (64 px) that a test may damage."""
    from medseg.data import synthetic

    return synthetic.write_kvasir(tmp_path / "kvasir", n=6, size=64)


@pytest.fixture
def nnunet(tmp_path) -> Path:
    """A fresh nnU-Net-layout dataset of 4 cases (6 x 32 x 32, 2 organs) that a test may damage."""
    from medseg.data import synthetic

    return synthetic.write_nnunet(tmp_path / "nn", n_cases=4, depth=6, size=32, n_organs=2)


# ---------------------------------------------------------------- devices (issue 21)
def _devices() -> list:
    """The devices a test of tensor-moving code runs on: ``cpu``, plus ``cuda`` (marked ``gpu``) when a CUDA
    device exists. ``pytest -m gpu`` (``make gpu-check``) runs the CUDA ones; a CPU machine collects no
    CUDA case at all, so the CPU suite neither grows nor skips."""
    params = [pytest.param("cpu", id="cpu")]
    if torch.cuda.is_available():
        params.append(pytest.param("cuda", id="cuda", marks=pytest.mark.gpu))
    return params


DEVICES = _devices()


@pytest.fixture(scope="module", params=DEVICES)
def device(request) -> torch.device:
    """Each device of :data:`DEVICES` in turn (module scope: models built once per device)."""
    return torch.device(request.param)


def pytest_collection_modifyitems(config, items):
    """A test marked ``gpu`` outside :data:`DEVICES` (e.g. the 2-GPU nccl step) is deselected on a machine
    without CUDA: it cannot run there, and the CPU suite does not count it."""
    if torch.cuda.is_available():
        return
    gpu_only = [it for it in items if it.get_closest_marker("gpu")]
    if gpu_only:
        config.hook.pytest_deselected(items=gpu_only)
        items[:] = [it for it in items if not it.get_closest_marker("gpu")]


# ---------------------------------------------------------------- no skip for a package `make venv` installs
MISSING_PACKAGE_SKIP = ("could not import", "is not installed")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test skipped because a package is missing fails instead: `make venv` installs every package the
    tests use (extras dev, baselines, cluster, loggers), so such a skip only hides a broken install."""
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and isinstance(rep.longrepr, tuple):
        reason = str(rep.longrepr[2])
        if any(s in reason for s in MISSING_PACKAGE_SKIP):
            rep.outcome = "failed"
            rep.longrepr = (
                f"{item.nodeid}: skipped for a missing package that `make venv` installs ({reason})"
            )
