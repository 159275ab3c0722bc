"""Rendering of a run comparison (:mod:`medseg.eval.compare`): the Markdown table and the Dice bar plot."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _pm(row: dict[str, Any], key: str, digits: int) -> str:
    m, s = row.get(f"{key}_mean", math.nan), row.get(f"{key}_std", math.nan)
    return "–" if not math.isfinite(m) else f"{m:.{digits}f} ± {s:.{digits}f}"


def _num(v: Any, fmt: str) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else format(v, fmt)


def write_markdown(
    path: Path,
    rows: list[dict[str, Any]],
    classes: list[str],
    notes: list[str],
    plot: str | None,
    grids: list[str],
) -> None:
    """The comparison table (mean ± std), notes, the Dice plot and the grid list as Markdown."""
    unit = rows[0].get("hd95_unit", "mm") if rows else "mm"
    head = ["Run", "Model", "Epoch", "Params", "Trainable", "Dice", "IoU", f"HD95 ({unit})"]
    for c in classes:
        head += [f"Dice {c}", f"IoU {c}", f"HD95 {c} ({unit})"]
    head += ["Train time (s)", "Peak memory (MB)", "Weights", "Eval protocol"]
    lines = [
        "# Run comparison",
        "",
        "Mean ± std over validation cases (applicable case x class rows; `empty_both` rows excluded).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for r in rows:
        mem = _num(r.get("peak_memory_mb"), ".0f")
        if mem != "–" and r.get("peak_memory_kind"):
            mem += f" ({r['peak_memory_kind']})"
        cells = [
            r["run"],
            r["model"],
            _num(r["epoch"], "d"),
            _num(r.get("params"), ","),
            _num(r.get("trainable_params"), ","),
            _pm(r, "dice", 4),
            _pm(r, "iou", 4),
            _pm(r, "hd95", 2),
        ]
        for c in classes:
            cells += [_pm(r, f"dice/{c}", 4), _pm(r, f"iou/{c}", 4), _pm(r, f"hd95/{c}", 2)]
        cells += [
            _num(r.get("train_time_s"), ".1f"),
            mem,
            r.get("weights", "unknown"),
            r.get("eval_protocol", "unknown"),
        ]
        lines.append("| " + " | ".join(str(x).replace("|", "\\|") for x in cells) + " |")
    lines += ["", "Runs:", ""] + [f"- `{r['run']}`: `{r['run_dir']}`" for r in rows]
    if plot:
        lines += ["", f"![Dice per class]({plot})"]
    lines += ["", "## Example predictions", ""]
    lines += [f"- [{g}]({g})" for g in grids] if grids else []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def plot_dice(path: Path, rows: list[dict[str, Any]], classes: list[str]) -> None:
    """Grouped bars: mean Dice per class (plus over all classes) per run, error bars = std over cases."""
    groups = classes + ["all"]
    keys = [f"dice/{c}" for c in classes] + ["dice"]
    x = np.arange(len(groups))
    width = 0.8 / max(len(rows), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(groups) * max(1, len(rows)) / 2 + 2), 3.5))
    for i, r in enumerate(rows):
        means = [r.get(f"{k}_mean", math.nan) for k in keys]
        stds = [r.get(f"{k}_std", math.nan) for k in keys]
        ax.bar(
            x + (i - (len(rows) - 1) / 2) * width,
            np.nan_to_num(means),
            width,
            yerr=np.nan_to_num(stds),
            capsize=3,
            label=r["run"],
        )
    ax.set_xticks(x, groups)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("Dice (mean ± std over cases)")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- main
