"""The four pages (run, inference, comparison, sweep) as dicts for ``report.html.j2``."""

from __future__ import annotations

import datetime as _dt
import math
import os
from pathlib import Path

from medseg.report import images as im
from medseg.report.read import FILES, _csv, _float, _json, _mean, _std, facts
from medseg.report.svg import chart


# ---------------------------------------------------------------------------------------------- curves
def curves(metrics: list[dict]) -> list[str]:
    """Learning curves (SVG): losses, validation overlap scores, validation HD95 per epoch."""
    if not metrics:
        return []
    keys = list(metrics[0])

    def series(pred):
        out = {}
        for k in keys:
            if pred(k):
                out[k] = [(_float(r.get("epoch")), _float(r.get(k))) for r in metrics]
        return out

    charts = [
        chart(
            "training loss", series(lambda k: k.startswith("train/") and ("loss" in k or k == "train/dice"))
        ),
        chart(
            "validation Dice / IoU",
            series(lambda k: k in ("val/dice", "val/iou") or k.startswith("val/dice/")),
        ),
        chart("validation HD95", series(lambda k: k.startswith("val/hd95"))),
    ]
    return [c for c in charts if c]


# ---------------------------------------------------------------------------------------------- cases
def case_rows(rows: list[dict]) -> tuple[list[dict], list[dict], list[str], str]:
    """One row per case from case x class rows: mean Dice/IoU, max HD95, per-class Dice and the status.

    Returns (cases worst first, per-class summary, class names, HD95 unit).
    """
    unit = next((r.get("hd95_unit") for r in rows if r.get("hd95_unit")), "") or "px"
    classes: list[str] = []
    by_case: dict[str, list[dict]] = {}
    for r in rows:
        name = str(r.get("class_name") or r.get("class_id") or "")
        if name not in classes:
            classes.append(name)
        by_case.setdefault(str(r.get("case_id")), []).append(r)
    cases = []
    for cid, rs in by_case.items():
        c = {
            "case": cid,
            "dice": _mean([_float(r.get("dice")) for r in rs]),
            "iou": _mean([_float(r.get("iou")) for r in rs]),
            "hd95": max(
                [_float(r.get("hd95")) for r in rs if math.isfinite(_float(r.get("hd95")))] or [math.nan]
            ),
            "status": ", ".join(
                sorted({str(r.get("status")) for r in rs if r.get("status") and r.get("status") != "ok"})
            ),
        }
        for r in rs:
            c[f"dice/{r.get('class_name') or r.get('class_id')}"] = _float(r.get("dice"))
        cases.append(c)
    cases.sort(key=lambda c: (not math.isfinite(c["dice"]), c["dice"] if math.isfinite(c["dice"]) else 0))
    per_class = []
    for name in classes:
        rs = [r for r in rows if str(r.get("class_name") or r.get("class_id") or "") == name]
        d, i, h = ([_float(r.get(k)) for r in rs] for k in ("dice", "iou", "hd95"))
        per_class.append(
            {
                "class": name,
                "n": len(rs),
                "dice": f"{_mean(d):.4f} ± {_std(d):.4f}",
                "iou": f"{_mean(i):.4f} ± {_std(i):.4f}",
                "hd95": f"{_mean(h):.2f} ± {_std(h):.2f}",
            }
        )
    return cases, per_class, classes, unit


def table(cases: list[dict], columns: list[tuple[str, str]]) -> dict:
    """The sortable case table: ``{"columns": [label], "rows": [{"cells": [(text, sort value)], ...}]}``."""
    rows = []
    for c in cases:
        cells = []
        for key, _ in columns:
            v = c.get(key)
            if isinstance(v, float):
                cells.append(("–" if not math.isfinite(v) else f"{v:.4g}", v if math.isfinite(v) else ""))
            else:
                cells.append((str(v if v is not None else ""), str(v if v is not None else "")))
        rows.append({"cells": cells, "case": c["case"], "view": c.get("view"), "arms": c.get("arms")})
    return {"columns": [label for _, label in columns], "rows": rows}


# ---------------------------------------------------------------------------------------------- kinds
def _vis_dir(folder: Path, summary: dict) -> Path | None:
    vis = folder / "vis"
    if not vis.is_dir():
        return None
    best = (summary.get("best") or {}).get("epoch")
    if best is not None and (vis / f"epoch_{int(best):03d}").is_dir():
        return vis / f"epoch_{int(best):03d}"
    eps = sorted(p for p in vis.glob("epoch_*") if p.is_dir())
    return eps[-1] if eps else vis


def _epoch(row: dict) -> int:
    e = _float(row.get("epoch"))
    return int(e) if math.isfinite(e) else 0


def run_page(folder: Path, files: Path, budget: im.Budget, context: dict) -> dict:
    """A training/evaluation run folder."""
    summary = _json(folder / "run_summary.json")
    metrics = _csv(folder / "metrics.csv")
    rows = _csv(folder / "val_cases_best.csv")
    which = "best epoch (val_cases_best.csv)"
    if not rows:
        rows = _csv(folder / "val_cases.csv")
        if rows:
            last = max(_epoch(r) for r in rows)
            rows = [r for r in rows if _epoch(r) == last]
            which = f"epoch {last} (the last validation in val_cases.csv)"
    cases, per_class, classes, unit = case_rows(rows)
    vis = _vis_dir(folder, summary)
    notes = []
    if vis is None:
        notes.append(
            "no pictures: this run folder has no vis/ (2D runs: vis=true; volumes: inference_3d.py's report)"
        )
    for c in cases:
        src = vis / f"{c['case']}.png" if vis is not None else None
        if src is not None and src.is_file():
            name = im.picture(src, files, _safe(c["case"]), budget)
            c["view"] = {"img": f"{FILES}/{name}"} if name else {"omitted": "size budget reached"}
    cols = [
        ("case", "case"),
        ("dice", "Dice (mean over classes)"),
        ("iou", "IoU"),
        ("hd95", f"HD95 ({unit})"),
    ]
    cols += [(f"dice/{k}", f"Dice {k}") for k in classes if len(classes) > 1]
    cols += [("status", "status")]
    return {
        "title": f"Run {folder.name}",
        "facts": facts(folder, summary, context),
        "curves": curves(metrics),
        "per_class": per_class,
        "unit": unit,
        "cases_from": which,
        "legend": im.legend(
            {
                int(_float(r["class_id"])): r.get("class_name", "")
                for r in rows
                if _float(r.get("class_id")) > 0
            }
        ),
        "table": table(cases, cols),
        "notes": notes,
    }


def _safe(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in str(s))


def _dataset(folder: Path, context: dict, dataset):
    """The inference's dataset: the one given, or built again from the stored dataset config."""
    if dataset is not None or not context.get("dataset_cfg"):
        return dataset
    from omegaconf import OmegaConf

    from medseg.data.datasets import build_dataset

    return build_dataset(OmegaConf.create(context["dataset_cfg"]))


def inference_page(folder: Path, files: Path, budget: im.Budget, context: dict, dataset=None) -> dict:
    """An ``inference_3d`` output folder: per case a slice slider through image | reference | prediction."""
    import numpy as np

    summary = _json(folder / "run_summary.json")
    rows = _csv(folder / "metrics.csv")
    cases, per_class, classes, unit = case_rows(rows)
    known = {c["case"] for c in cases}
    cases += [
        {"case": p.stem, "dice": math.nan, "iou": math.nan, "hd95": math.nan, "status": "no reference"}
        for p in sorted(folder.glob("*.npy"))
        if p.stem not in known
    ]
    notes = []
    try:
        ds = _dataset(folder, context, dataset)
    except Exception as e:  # data moved since the run: the tables are still reported
        ds, _ = None, notes.append(f"no pictures: the dataset could not be opened ({type(e).__name__}: {e})")
    names: dict[int, str] = {}
    if ds is not None:
        names = {int(k): str(v) for k, v in getattr(ds, "label_names", {}).items()}
    for i, c in enumerate(cases):
        npy = folder / f"{c['case']}.npy"
        if ds is None or not npy.is_file():
            continue
        try:
            raw = ds.load_case(c["case"])
        except Exception as e:  # one unreadable case: the others are still shown
            c["view"] = {"omitted": f"case not readable ({type(e).__name__})"}
            continue
        pred = np.load(npy)
        ref = np.asarray(raw["label"]) if raw.get("label") is not None else None
        if not names and raw.get("label_names"):
            names = {int(k): str(v) for k, v in raw["label_names"].items()}
        share = budget.left // max(1, len(cases) - i)
        v = im.volume_slices(np.asarray(raw["image"]), ref, pred, files, _safe(c["case"]), budget, share)
        if v is None:
            c["view"] = {"omitted": "size budget reached"}
        else:
            v["srcs"] = [f"{FILES}/{s}" for s in v["srcs"]]
            c["view"] = {"slices": v}
    cols = [("case", "case"), ("dice", "Dice (mean over organs)"), ("iou", "IoU"), ("hd95", f"HD95 ({unit})")]
    cols += [(f"dice/{k}", f"Dice {k}") for k in classes if len(classes) > 1]
    cols += [("status", "status")]
    return {
        "title": f"Inference {folder.name}",
        "facts": facts(folder, summary, context),
        "curves": [],
        "per_class": per_class,
        "unit": unit,
        "cases_from": "metrics.csv",
        "legend": im.legend(names),
        "table": table(cases, cols),
        "notes": notes,
    }


def compare_page(folder: Path, files: Path, budget: im.Budget, context: dict) -> dict:
    """A ``tools/compare.py`` folder: one row per case, each arm's Dice and prediction side by side."""
    arms = _csv(folder / "comparison.csv")
    by_case: dict[str, dict] = {}
    arm_rows = []
    for a in arms:
        d = Path(a.get("run_dir") or "")
        ep = a.get("epoch")
        rows = [r for r in _csv(d / "val_cases.csv") if not ep or str(r.get("epoch")) == str(ep)]
        cases, *_ = case_rows(rows)
        for c in cases:
            by_case.setdefault(c["case"], {"case": c["case"]})[f"dice:{a['run']}"] = c["dice"]
        link = d / "report.html"
        arm_rows.append(
            {
                "run": a["run"],
                "model": a.get("model", ""),
                "epoch": ep or "",
                "dice": f"{_float(a.get('dice_mean')):.4f} ± {_float(a.get('dice_std')):.4f}",
                "weights": a.get("weights", ""),
                "protocol": a.get("eval_protocol", ""),
                "href": os.path.relpath(link, folder) if link.is_file() else "",
                "folder": str(d),
            }
        )
    cases = list(by_case.values())
    for c in cases:
        c["dice"] = _mean([v for k, v in c.items() if k.startswith("dice:")])
        c["min_dice"] = min(
            [v for k, v in c.items() if k.startswith("dice:") and math.isfinite(v)] or [math.nan]
        )
    cases.sort(key=lambda c: (not math.isfinite(c["dice"]), c["dice"] if math.isfinite(c["dice"]) else 0))
    for c in cases:
        src = folder / "grids" / f"{c['case']}.png"
        if src.is_file():
            name = im.picture(src, files, _safe(c["case"]), budget)
            c["view"] = {"img": f"{FILES}/{name}"} if name else {"omitted": "size budget reached"}
    cols = [("case", "case"), ("dice", "Dice (mean over arms)"), ("min_dice", "Dice (worst arm)")]
    cols += [(f"dice:{a['run']}", f"Dice {a['run']}") for a in arms]
    series = {a["run"]: [(i, _float(a.get("dice_mean")))] for i, a in enumerate(arms)}
    return {
        "title": f"Comparison {folder.name}",
        "facts": [
            ("arms", str(len(arms))),
            ("git commit", str(context.get("git_commit") or "unknown")),
            ("report written", _dt.datetime.now().astimezone().isoformat(timespec="seconds")),
        ],
        "curves": [chart("mean Dice per arm", series, xlabel="arm", lines=False)],
        "arms": arm_rows,
        "unit": "",
        "per_class": [],
        "cases_from": "each arm's val_cases.csv at the compared epoch",
        "table": table(cases, cols),
        "notes": [] if (folder / "grids").is_dir() else ["no side-by-side pictures: an arm has no vis/"],
    }


def sweep_page(folder: Path, files: Path, budget: im.Budget, context: dict) -> dict:
    """A multirun sweep folder: the sweep table and a plot of best value against parameters."""
    rows = _csv(folder / "sweep_summary.csv")
    for r in rows:
        rep = folder / r.get("run", "") / "report.html"
        r["href"] = os.path.relpath(rep, folder) if r.get("run") and rep.is_file() else ""
    metric = next((r.get("best_metric") for r in rows if r.get("best_metric")), "best value")
    pts = {r.get("run", "?"): [(_float(r.get("params_M")), _float(r.get("best_value")))] for r in rows}
    cols = [k for k in (rows[0] if rows else {}) if k not in ("href",)]
    return {
        "title": f"Sweep {folder.name}",
        "facts": [("jobs", str(len(rows))), ("git commit", str(context.get("git_commit") or "unknown"))],
        "curves": [
            c
            for c in [
                chart(
                    f"{metric} vs parameters",
                    pts,
                    xlabel="parameters (M)",
                    lines=False,
                    labels={k: k for k in pts},
                )
            ]
            if c
        ],
        "sweep": {"columns": cols, "rows": rows},
        "per_class": [],
        "unit": "",
        "table": None,
        "notes": [],
    }
