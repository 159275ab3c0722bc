"""Sweeps: job folder names, and after a Hydra multirun one table and one plot over the jobs.

Job folders are ``<job.num>_<short key>`` (:func:`job_dirname`, the ``sweep_job_dirname`` resolver of
``conf/hydra/default.yaml``; :func:`register_resolvers` runs when ``medseg.run.cli`` is imported, i.e. before
``@hydra.main`` composes). The full overrides stay in each job's ``.hydra/overrides.yaml``.

The summary is a Hydra callback (``conf/hydra/default.yaml``): it takes the job folders from Hydra's job
results (``on_job_end``), or, where jobs ran in other processes (submitit), from the ``run_summary.json``
files under the sweep folder at any depth. When it cannot write a summary it says why in one line on
stderr. ``summarize_sweep(DIR)`` can also be called by hand on any folder that holds run folders.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from medseg.eval.tables import write_csv
from medseg.train.runtime import atomic_write_text

MAX_JOB_DIRNAME = 100
_DOUBLE_SUFFIXES = (".nii.gz", ".tar.gz")  # one suffix to a user: case_001.nii.gz -> case_001
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,-]+")


def _short_value(value: str) -> str:
    """An override's value for a folder name: a path becomes its file name without suffix, a float
    (an Optuna trial's ``0.7340279606636548``) four significant digits."""
    v = value.strip().strip("'\"")
    if "/" in v or "\\" in v:
        name = PurePosixPath(v.replace("\\", "/").rstrip("/")).name
        double = next((x for x in _DOUBLE_SUFFIXES if name.lower().endswith(x)), None)
        v = name[: -len(double)] if double else PurePosixPath(name).stem if name else v
    elif re.fullmatch(r"[-+]?(\d+\.\d*|\.\d+|\d+(\.\d*)?[eE][-+]?\d+)", v):
        v = f"{float(v):.4g}"
    return _UNSAFE.sub("-", v).strip("-")


def job_dirname(
    num: int | str, overrides: Iterable[str], exclude_keys: Iterable[str] = (), max_len: int = MAX_JOB_DIRNAME
) -> str:
    """Folder name of one sweep job: ``<num>_<key=value,...>``, at most ``max_len`` characters.

    Overrides keep the job's order (a sweeper's own parameters come first: Optuna's trial values,
    the basic sweeper's ``hydra.sweeper.params``); ``hydra.*`` keys and keys in ``exclude_keys``
    (without ``+``/``~``) are left out; a key is shortened to its last dotted part, a value holding a
    path to its file name without suffix (``sam2_checkpoint=checkpoints/sam2.1_hiera_tiny.pt`` →
    ``sam2_checkpoint=sam2.1_hiera_tiny``) and a float to 4 significant digits; characters other than
    letters, digits and ``._=,-`` become ``-``. A longer name is cut and ends with 8 hex digits of a
    hash of all overrides, so different jobs stay apart.
    """
    if max_len < 20:
        raise ValueError(f"max_len={max_len}: a job folder name needs at least 20 characters")
    lines = [str(x) for x in overrides]
    excluded = {str(k) for k in exclude_keys}
    items = []
    for line in lines:
        key, has_value, value = line.partition("=")
        bare = key.strip().lstrip("+~")
        if bare in excluded or bare.startswith("hydra."):
            continue
        name = _UNSAFE.sub("-", bare.rsplit(".", 1)[-1]).strip("-")
        if key.strip().startswith("~"):
            name = f"no-{name}"
        items.append(f"{name}={_short_value(value)}" if has_value else name)
    key = ",".join(i for i in items if i)
    out = f"{num}_{key}" if key else str(num)
    if len(out) > max_len:
        digest = hashlib.sha1("\n".join(sorted(lines)).encode()).hexdigest()[:8]
        out = f"{out[: max_len - 9].rstrip(',=-._')}-{digest}"
    return out


def register_resolvers() -> None:
    """Register ``${sweep_job_dirname:NUM,OVERRIDES,EXCLUDE_KEYS}`` with OmegaConf (idempotent)."""
    if not OmegaConf.has_resolver("sweep_job_dirname"):
        OmegaConf.register_new_resolver(
            "sweep_job_dirname",
            lambda num, overrides, exclude=(): job_dirname(num, list(overrides), list(exclude or ())),
        )


def _loud(msg: str) -> None:
    print(f"WARNING {msg}", file=sys.stderr, flush=True)


def find_job_dirs(sweep_dir: str | Path) -> list[Path]:
    """Every run folder under ``sweep_dir`` at any depth (a folder holding ``run_summary.json``)."""
    return sorted({p.parent for p in Path(sweep_dir).rglob("run_summary.json")})


def _run_row(run: Path) -> dict | None:
    info_path = run / "run_summary.json"
    if not info_path.exists():
        return None
    info = json.loads(info_path.read_text(encoding="utf-8"))
    last = info.get("last") or {}
    best = info.get("best") or {}
    overrides = ""
    ov = run / ".hydra" / "overrides.yaml"
    if ov.exists():
        overrides = " ".join(
            x.strip("- ").strip() for x in ov.read_text(encoding="utf-8").splitlines() if x.strip()
        )
    return {
        "run": run.name,
        "model": info.get("model"),
        "params_M": (info.get("params") or 0) / 1e6,
        "trainable_params_M": (info.get("trainable_params") or 0) / 1e6,
        "best_metric": best.get("metric"),
        "best_value": best.get("value"),
        "best_epoch": best.get("epoch"),
        "val_dice_last": last.get("val/dice"),
        # one column per HD95 unit (val/hd95_mm -> val_hd95_mm_last): never one mean across units
        **{f"val_{k[4:]}_last": v for k, v in last.items() if k.startswith("val/hd95_") and "/" not in k[4:]},
        "train_time_s": info.get("train_time_s"),
        "peak_memory_mb": info.get("peak_memory_mb"),
        "device": info.get("device"),
        "overrides": overrides,
    }


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def summarize_sweep(sweep_dir: str | Path, runs: Iterable[str | Path] | None = None) -> list[dict]:
    """Write ``sweep_summary.csv``, ``sweep_summary.md`` and ``sweep_summary.png`` into ``sweep_dir``.

    ``runs``: the job folders (default: :func:`find_job_dirs`). Jobs without ``run_summary.json`` are
    named in one warning line; with none at all nothing is written and the line says so.
    """
    sweep_dir = Path(sweep_dir)
    runs = find_job_dirs(sweep_dir) if runs is None else [Path(r) for r in runs]
    rows, missing = [], []
    for run in runs:
        row = _run_row(run)
        if row is None:
            missing.append(run.name)
            continue
        where = run.resolve()
        if where.parent != sweep_dir.resolve() and where.is_relative_to(sweep_dir.resolve()):
            row["run"] = str(where.relative_to(sweep_dir.resolve()))  # a nested job folder
        rows.append(row)
    if not rows:
        _loud(
            f"sweep summary not written: none of the {len(runs)} job folders Hydra reported under {sweep_dir} "
            "holds a run_summary.json"
            if runs
            else f"sweep summary not written: no job folder with run_summary.json under {sweep_dir}"
        )
        return []
    if missing:
        _loud(
            f"sweep summary: {len(missing)} of {len(runs)} jobs have no run_summary.json: {', '.join(missing)}"
        )
    write_csv(sweep_dir / "sweep_summary.csv", rows)
    cols = [
        "run",
        "model",
        "params_M",
        "best_metric",
        "best_value",
        "val_dice_last",
        "train_time_s",
        "peak_memory_mb",
    ]
    md = [
        "# Sweep summary",
        "",
        f"Sweep folder: `{sweep_dir}`",
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * len(cols),
    ]
    md += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    atomic_write_text(sweep_dir / "sweep_summary.md", "\n".join(md) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from medseg.eval.figures import place_labels

        fig, ax = plt.subplots(figsize=(6, 4))
        xs = [r["params_M"] for r in rows]
        ys = [r["best_value"] if r["best_value"] is not None else float("nan") for r in rows]
        ts = [r["train_time_s"] or 0.0 for r in rows]
        sc = ax.scatter(xs, ys, c=ts, s=60, cmap="viridis")
        ax.set_xlabel("parameters (M)")
        ax.set_ylabel(str(rows[0]["best_metric"] or "best metric"))
        fig.colorbar(sc, ax=ax, label="train time (s)")
        fig.tight_layout()
        place_labels(ax, xs, ys, point_labels(rows))  # after the layout: label boxes never overlap
        fig.savefig(sweep_dir / "sweep_summary.png", dpi=120, bbox_inches="tight")
        plt.close(fig)
    except Exception as e:  # a plot must never fail a finished sweep
        atomic_write_text(sweep_dir / "sweep_summary_plot_error.txt", f"{type(e).__name__}: {e}\n")
    from medseg.report import report_or_warning

    report_or_warning(sweep_dir, kind="sweep")  # report.html; a failure is a WARNING
    return rows


def point_labels(rows: list[dict]) -> list[str]:
    """Short unique labels for the sweep plot: the model names, or the job folders when a model repeats."""
    from medseg.eval.figures import short_names

    labels = [str(r["model"]) for r in rows]
    if len(set(labels)) < len(labels):
        labels = [str(r["run"]) for r in rows]
    return short_names(labels)


class SweepSummaryCallback(Callback):
    """Hydra callback: writes the sweep summary into ``hydra.sweep.dir`` when a multirun ends, over the
    job folders Hydra reported (jobs run in this process) or found under the sweep folder."""

    def __init__(self) -> None:
        self.job_dirs: list[Path] = []

    def on_multirun_start(self, config, **kwargs) -> None:
        self.job_dirs = []

    def on_job_end(self, config, job_return, **kwargs) -> None:
        out = OmegaConf.select(job_return.hydra_cfg or config, "hydra.runtime.output_dir")
        if out and Path(out) not in self.job_dirs:
            self.job_dirs.append(Path(out))

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        runs = self.job_dirs or find_job_dirs(sweep_dir)
        summarize_sweep(sweep_dir, runs)
        if config.get("compare_runs"):
            compare_sweep(sweep_dir, runs)


def compare_sweep(sweep_dir: Path, runs: Iterable[str | Path] | None = None) -> Path | None:
    """Compare the job folders of a sweep (:mod:`medseg.eval.compare`) into ``sweep_dir/comparison``."""
    from medseg.eval.compare import compare_runs

    jobs = find_job_dirs(sweep_dir) if runs is None else [Path(r) for r in runs]
    runs = [p for p in jobs if (p / "val_cases.csv").exists()]
    if len(runs) < 2:
        _loud(
            f"comparison not written: {len(runs)} of {len(jobs)} jobs under {sweep_dir} have a val_cases.csv (need 2)"
        )
        return None
    out = Path(sweep_dir) / "comparison"
    labels = [_job_label(r) for r in runs]
    compare_runs(runs, out, names=labels if len(set(labels)) == len(labels) else None)
    return out


def _job_label(run: Path) -> str:
    """A short name for a sweep job: its ``arm``/``model`` override, else the folder name."""
    ov = run / ".hydra" / "overrides.yaml"
    if ov.exists():
        items = [x.strip("- ").strip() for x in ov.read_text(encoding="utf-8").splitlines() if x.strip()]
        for key in ("+arm=", "arm=", "model="):
            hit = [x[len(key) :] for x in items if x.startswith(key)]
            if hit:
                return hit[0]
    return run.name
