"""Helpers shared by the medseg tests that compare runs (1 versus 2 processes, interrupted versus
uninterrupted, trained versus initial weights) and by the inference tests (volumes of a non-square grid,
the cases inference loads). The runners (``run_cli``, ``run_torchrun``, ``run_entry``) and fixtures are
in ``tests/conftest.py``."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from medseg.eval.tables import read_csv
from tests.conftest import CLI_SMALL, run_entry

# columns of metrics.csv / val_cases.csv that differ between two runs of the same steps
TIMING = {"time_s", "loader_wait_s", "loader_wait_frac"}
# 1 process versus 2: two SGD steps (Adam would amplify the summation-order noise) from the weights of
# torch.manual_seed(5)
DDP_SMALL = [
    *CLI_SMALL,
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.progress_bar=false",
    "optim=sgd",
    "optim.lr=1e-2",
    "seed=5",
]


def max_abs_diff(a: dict, b: dict) -> float:
    """The largest absolute difference between two state dicts, over the keys of ``a``."""
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def init_weights(seed: int) -> dict:
    """The weights a run with ``seed=<seed>`` starts from: random Hiera-T at 64 px."""
    from sam2_train import build_sam2_model

    torch.manual_seed(seed)
    return build_sam2_model("sam2.1_hiera_t", image_size=64).state_dict()


def changed_keys(after: dict, before: dict) -> set[str]:
    """The names of the tensors of ``after`` that differ from those of ``before``."""
    return {k for k in after if not torch.equal(after[k], before[k])}


def full_part_resumed(root: str, overrides: list[str], tmp_path: Path) -> tuple[Path, Path, Path]:
    """Three in-process runs of 2 epochs of entry point ``root``: ``full`` uninterrupted, ``part`` stopped
    after epoch 1 (as if killed), ``resumed`` from part's checkpoint_last.pth; returns their folders."""
    full, part, resumed = tmp_path / "full", tmp_path / "part", tmp_path / "resumed"
    two_epochs = [*overrides, "trainer.max_epochs=2"]
    run_entry(root, two_epochs, full)
    run_entry(root, [*two_epochs, "trainer.stop_after_epochs=1"], part)
    run_entry(root, [*two_epochs, f"trainer.resume={part / 'checkpoint_last.pth'}"], resumed)
    return full, part, resumed


def untimed_rows(path: str | Path) -> list[dict]:
    """The rows of a CSV table without the :data:`TIMING` columns."""
    return [{k: v for k, v in r.items() if k not in TIMING} for r in read_csv(path)]


def crop_nifti_width(root: Path, width: int) -> None:
    """Keep the first ``width`` columns (nibabel's i = x = W axis) of every ``.nii.gz`` below ``root``."""
    for f in sorted(root.rglob("*.nii.gz")):
        img = nib.load(str(f))
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:width], img.affine, header=img.header), str(f))


def record_loaded_cases(monkeypatch, inference) -> dict:
    """Wrap ``inference.build_dataset`` (module ``func_3d.inference``) so that the datasets it builds keep
    each case they load: ``{case_id: case}``, and ``"last"``: the latest case."""
    seen: dict = {}
    real_build = inference.build_dataset

    def spy_build(cfg):
        ds = real_build(cfg)
        load = ds.load_case

        def load_case(case_id, **kw):
            seen[case_id] = seen["last"] = load(case_id, **kw)
            return seen["last"]

        ds.load_case = load_case
        return ds

    monkeypatch.setattr(inference, "build_dataset", spy_build)
    return seen
