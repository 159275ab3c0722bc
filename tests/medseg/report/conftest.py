"""Folders to report on, built once per module: a tiny 2D run (3 validation cases, pictures), a tiny 3D
inference (2 volumes, Meta-layout random weights), a 3-arm comparison and a 2-job sweep made from the run."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

from tests.conftest import compose_cfg, run_entry


@pytest.fixture(scope="module")
def run2d(tmp_path_factory) -> Path:
    """``train_2d`` for one step on 6 images (half of them validation cases), ``vis=true``."""
    from medseg.data import synthetic

    base = tmp_path_factory.mktemp("rep2d")
    kv = synthetic.write_kvasir(base / "kvasir", n=6, size=64)
    out = base / "run"
    run_entry(
        "train_2d",
        [
            f"dataset.root={kv}",
            "dataset.split.use_native=false",
            "dataset.split.ratios=[0.5,0.5,0.0]",
            "trainer.limit_train_batches=1",
            "trainer.limit_val_batches=3",
            "vis=true",
            "logger=none",
        ],
        out,
    )
    return out


@pytest.fixture(scope="module")
def inference3d(tmp_path_factory, meta_ckpt) -> Path:
    """``inference_3d`` of 2 synthetic CT volumes (6 x 32 x 32, 2 organs) with random Meta-layout weights."""
    from func_3d.inference import run_inference
    from medseg.data import synthetic

    base = tmp_path_factory.mktemp("rep3d")
    nn = synthetic.write_nnunet(base / "nn", n_cases=2, depth=6, size=32, n_organs=2, n_test=0)
    out = base / "preds"
    cfg = compose_cfg(
        "inference_3d",
        [
            f"checkpoint={meta_ckpt}",
            "model=sam2.1_hiera_t",
            "model.image_size=64",
            f"dataset.root={nn}",
            "split=all",
            f"output_dir={out}",
            "trainer.device=cpu",
        ],
        base / "hydra",
    )
    run_inference(cfg)
    return out


def arm(run: Path, dest: Path, scale: float) -> Path:
    """A copy of ``run`` whose validation Dice is ``scale`` times its own plus a per-case offset."""
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("*.pth", "report*", "tensorboard"))
    for name in ("val_cases.csv", "val_cases_best.csv"):
        path = dest / name
        if not path.exists():
            continue
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))
        for i, r in enumerate(rows):
            r["dice"] = str(min(1.0, scale * (0.2 + 0.3 * (i % 3))))
        with open(path, "w", encoding="utf-8", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    return dest


@pytest.fixture(scope="module")
def comparison(run2d, tmp_path_factory) -> Path:
    """``tools/compare.py`` of 3 arms (the run and two copies with other scores); each arm has a report."""
    from medseg.eval.compare import compare_runs
    from medseg.report import write_report

    base = tmp_path_factory.mktemp("repcmp")
    arms = [arm(run2d, base / f"arm{i}", s) for i, s in enumerate((1.0, 0.5, 1.5))]
    for a in arms:
        write_report(a)
    compare_runs(arms, base / "cmp", names=["a", "b", "c"])
    return base / "cmp"


@pytest.fixture(scope="module")
def sweep(run2d, tmp_path_factory) -> Path:
    """A multirun folder of 2 jobs summarised by :func:`medseg.eval.sweep.summarize_sweep`."""
    from medseg.eval.sweep import summarize_sweep

    base = tmp_path_factory.mktemp("repsweep") / "multirun"
    for i in range(2):
        shutil.copytree(run2d, base / str(i), ignore=shutil.ignore_patterns("*.pth", "tensorboard"))
    summarize_sweep(base)
    return base
