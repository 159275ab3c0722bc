"""Sweep summary: after a Hydra multirun, one table and one plot over the jobs of the sweep.

Registered in ``conf/hydra/default.yaml`` as a Hydra callback; ``summarize_sweep(DIR)`` can also be
called by hand on any folder that holds run folders.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from hydra.experimental.callback import Callback

from medseg.runtime import atomic_write_text
from medseg.tables import write_csv


def _run_row(run: Path) -> dict | None:
    info_path = run / "run_summary.json"
    if not info_path.exists():
        return None
    info = json.loads(info_path.read_text())
    last = info.get("last") or {}
    best = info.get("best") or {}
    overrides = ""
    ov = run / ".hydra" / "overrides.yaml"
    if ov.exists():
        overrides = " ".join(x.strip("- ").strip() for x in ov.read_text().splitlines() if x.strip())
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


def summarize_sweep(sweep_dir: str | Path) -> list[dict]:
    """Write ``sweep_summary.csv``, ``sweep_summary.md`` and ``sweep_summary.png`` into ``sweep_dir``."""
    sweep_dir = Path(sweep_dir)
    rows = [r for r in (_run_row(p) for p in sorted(sweep_dir.iterdir()) if p.is_dir()) if r]
    if not rows:
        return []
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

        fig, ax = plt.subplots(figsize=(6, 4))
        xs = [r["params_M"] for r in rows]
        ys = [r["best_value"] if r["best_value"] is not None else float("nan") for r in rows]
        ts = [r["train_time_s"] or 0.0 for r in rows]
        sc = ax.scatter(xs, ys, c=ts, s=60, cmap="viridis")
        for r, x, y in zip(rows, xs, ys):
            ax.annotate(str(r["model"]), (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xlabel("parameters (M)")
        ax.set_ylabel(str(rows[0]["best_metric"] or "best metric"))
        fig.colorbar(sc, ax=ax, label="train time (s)")
        fig.tight_layout()
        fig.savefig(sweep_dir / "sweep_summary.png", dpi=120)
        plt.close(fig)
    except Exception as e:  # a plot must never fail a finished sweep
        atomic_write_text(sweep_dir / "sweep_summary_plot_error.txt", f"{type(e).__name__}: {e}\n")
    return rows


class SweepSummaryCallback(Callback):
    """Hydra callback: writes the sweep summary into ``hydra.sweep.dir`` when a multirun ends."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        summarize_sweep(sweep_dir)
        if config.get("compare_runs"):
            compare_sweep(sweep_dir)


def compare_sweep(sweep_dir: Path) -> Path | None:
    """Run tools/compare.py over the job folders of a sweep into ``sweep_dir/comparison``."""
    import importlib.util

    runs = [p for p in sorted(Path(sweep_dir).iterdir()) if (p / "val_cases.csv").exists()]
    if len(runs) < 2:
        return None
    spec = importlib.util.spec_from_file_location(
        "sam2med_compare", Path(__file__).resolve().parents[1] / "tools" / "compare.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = Path(sweep_dir) / "comparison"
    labels = [_job_label(r) for r in runs]
    mod.compare_runs(runs, out, names=labels if len(set(labels)) == len(labels) else None)
    return out


def _job_label(run: Path) -> str:
    """A short name for a sweep job: its ``arm``/``model`` override, else the folder name."""
    ov = run / ".hydra" / "overrides.yaml"
    if ov.exists():
        items = [x.strip("- ").strip() for x in ov.read_text().splitlines() if x.strip()]
        for key in ("+arm=", "arm=", "model="):
            hit = [x[len(key) :] for x in items if x.startswith(key)]
            if hit:
                return hit[0]
    return run.name
