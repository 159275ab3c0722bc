"""Compare finished runs side by side (the logic of ``python tools/compare.py RUN_DIR [RUN_DIR ...] --out DIR``;
the sweep summary calls it too). Rendering of the table and plot: :mod:`medseg.eval.compare_report`.

Every run folder must hold ``splits.json`` and ``val_cases.csv`` (written by ``medseg.train.engine``);
``run_summary.json``, ``.hydra/config.yaml`` and ``vis/epoch_XXX/*.png`` are used when present. The runs
must share their validation and test splits, otherwise the tool exits 2 with one line naming the two
folders that differ.

Writes into ``--out``:

- ``comparison.csv`` / ``comparison.md``: one row per run with model, parameter counts, per-class and
  overall Dice / IoU / HD95 as mean ± std over the applicable (case x class) rows of the chosen
  validation (``status == "empty_both"`` rows are excluded, as in ``medseg.eval.metrics``), train time and
  peak memory;
- ``comparison_dice.png``: bars of mean Dice per class (and over all classes) per model, error bars =
  std over cases;
- ``grids/<case_id>.png``: image | ground truth | one prediction panel per model, for the cases that
  every run visualised at its chosen epoch.

Std is the sample standard deviation (``ddof=1``; 0 for a single value). Imports no torch.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402

from medseg.eval.compare_report import plot_dice, write_markdown  # noqa: E402
from medseg.eval.figures import make_grids, short_names  # noqa: E402  (no torch)
from medseg.train.weights import describe  # noqa: E402  (no torch)

METRICS = ("dice", "iou", "hd95")


class CompareError(Exception):
    """A problem with the run folders, reported as one line by :func:`main`."""


# ---------------------------------------------------------------------------------------------- reading
def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CompareError(f"{path} is missing") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise CompareError(f"{path} could not be read: {exc}") from None


def _float(v: Any) -> float:
    """CSV cell -> float; empty or unparsable cells are NaN."""
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _epoch(v: Any) -> int | None:
    f = _float(v)
    return int(f) if math.isfinite(f) else None


def read_val_cases(run_dir: Path) -> list[dict[str, Any]]:
    """Rows of ``run_dir/val_cases.csv`` with ``epoch`` as int and the metrics as floats."""
    path = run_dir / "val_cases.csv"
    if not path.is_file():
        raise CompareError(f"{path} is missing (the run never validated?)")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    need = {"epoch", "case_id", "class_name", "dice", "iou", "hd95", "status"}
    if not rows:
        raise CompareError(f"{path} has no rows")
    missing = need - set(rows[0])
    if missing:
        raise CompareError(f"{path} lacks the columns {sorted(missing)}")
    for r in rows:
        r["epoch"] = _epoch(r["epoch"])
        for k in METRICS:
            r[k] = _float(r[k])
        r["hd95_unit"] = r.get("hd95_unit") or "mm"  # files from before the column said mm
    return rows


def hd95_unit(path: Path, rows: list[dict[str, Any]], epoch: int | None) -> str:
    """The one HD95 unit of a run's chosen validation; HD95 means are never taken across units."""
    units = sorted({r["hd95_unit"] for r in rows if r["epoch"] == epoch}) or ["mm"]
    if len(units) > 1:
        raise CompareError(f"{path}: HD95 rows in several units {units}; they cannot share one mean")
    return units[0]


def model_name(run_dir: Path, summary: dict[str, Any]) -> str:
    """Model name from ``run_summary.json``, else ``model.name`` of ``.hydra/config.yaml``, else the folder."""
    if summary.get("model"):
        return str(summary["model"])
    cfg = run_dir / ".hydra" / "config.yaml"
    if cfg.is_file():
        try:
            import yaml

            name = ((yaml.safe_load(cfg.read_text(encoding="utf-8")) or {}).get("model") or {}).get("name")
        except Exception:  # no/odd yaml: fall back to a plain scan of the "model:" block
            m = re.search(
                r"^model:\s*\n(?:[ \t]+.*\n)*?[ \t]+name:\s*['\"]?([^'\"\n]+)",
                cfg.read_text(encoding="utf-8"),
                re.M,
            )
            name = m.group(1).strip() if m else None
        if name:
            return str(name)
    return run_dir.resolve().name


def check_splits(run_dirs: Sequence[Path]) -> None:
    """Raise :class:`CompareError` unless all runs have the same val and test case sets."""
    splits = [_read_json(d / "splits.json") for d in run_dirs]
    for key, word in (("val", "validation"), ("test", "test")):
        ref = set(map(str, splits[0].get(key) or []))
        for d, s in zip(run_dirs[1:], splits[1:]):
            other = set(map(str, s.get(key) or []))
            if other != ref:
                a, b = run_dirs[0], d
                only_a, only_b = sorted(ref - other), sorted(other - ref)
                ex = ", e.g. " + ", ".join((only_a or only_b)[:3])
                raise CompareError(
                    f"{a} and {b} used different {word} splits ({len(only_a)} cases only in {a}, "
                    f"{len(only_b)} only in {b}{ex})"
                )


def choose_epoch(rows: list[dict[str, Any]], summary: dict[str, Any], epoch: str) -> tuple[int | None, str]:
    """The validation of ``val_cases.csv`` to use and a note ('' when it is the one asked for).

    ``epoch``: ``"best"`` (``run_summary.json`` best epoch, else the last), ``"last"`` or an epoch number.
    The engine rewrites ``val_cases.csv`` at every validation, so the best epoch may no longer be in it;
    then the last one present is used and the note says so.
    """
    present = sorted({r["epoch"] for r in rows if r["epoch"] is not None})
    last = present[-1] if present else None
    if epoch == "last":
        return last, ""
    if epoch == "best":
        want = _epoch((summary.get("best") or {}).get("epoch"))
        if want is None:
            return last, "no best epoch in run_summary.json; used the last validation"
    else:
        want = _epoch(epoch)
        if want is None:
            raise CompareError(f"--epoch must be best, last or an epoch number, not {epoch!r}")
    if want in present:
        return want, ""
    return last, f"epoch {want} is not in val_cases.csv; used epoch {last}"


# ---------------------------------------------------------------------------------------------- stats
def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean, sample std (0 for one value) and count of the finite values; NaNs when there are none."""
    v = np.array([x for x in values if math.isfinite(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0, int(v.size)


def summarize(rows: list[dict[str, Any]], epoch: int | None) -> tuple[dict[str, float], list[str]]:
    """Per-class and overall ``<metric>[/<class>]_{mean,std,n}`` over the applicable rows of ``epoch``."""
    rows = [r for r in rows if r["epoch"] == epoch]
    classes = list(dict.fromkeys(r["class_name"] for r in rows))
    ok = [r for r in rows if r["status"] != "empty_both"]
    out: dict[str, float] = {}
    for m in METRICS:
        out[f"{m}_mean"], out[f"{m}_std"], out[f"{m}_n"] = mean_std([r[m] for r in ok])
    for c in classes:
        cls = [r for r in ok if r["class_name"] == c]
        for m in METRICS:
            out[f"{m}/{c}_mean"], out[f"{m}/{c}_std"], out[f"{m}/{c}_n"] = mean_std([r[m] for r in cls])
    out["n_cases"] = len({r["case_id"] for r in rows})
    return out, classes


# ---------------------------------------------------------------------------------------------- writing
def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return "" if v is None else v


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Rows to CSV; the header is the union of the keys in order of appearance, NaN is an empty cell."""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow({k: _cell(r.get(k)) for k in cols})


def compare_runs(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    names: Sequence[str] | None = None,
    epoch: str = "best",
) -> list[dict[str, Any]]:
    """Compare ``run_dirs`` and write the outputs into ``out_dir``; returns the ``comparison.csv`` rows.

    Raises :class:`CompareError` for missing files, differing splits or bad arguments.
    """
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise CompareError("no run folders given")
    if Path(out_dir).exists() and not Path(out_dir).is_dir():
        raise CompareError(f"--out {out_dir}: names a file, not a folder")
    for d in dirs:
        if not d.is_dir():
            raise CompareError(f"{d} is not a folder")
    if names is not None and len(names) != len(dirs):
        raise CompareError(f"--names has {len(names)} labels for {len(dirs)} run folders")
    check_splits(dirs)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # --out naming a file, or a folder under a file
        raise CompareError(f"--out {out}: cannot be created ({exc.strerror or exc})") from None

    rows: list[dict[str, Any]] = []
    classes: list[str] = []
    notes: list[str] = []
    epochs: list[int | None] = []
    for i, d in enumerate(dirs):
        cases = read_val_cases(d)
        summary = _read_json(d / "run_summary.json") if (d / "run_summary.json").is_file() else {}
        if not summary:
            notes.append(f"{d}: no run_summary.json (parameters, time and memory unknown)")
        model = model_name(d, summary)
        ep, note = choose_epoch(cases, summary, epoch)
        if note:
            notes.append(f"{d}: {note}")
        stats, cls = summarize(cases, ep)
        stats["hd95_unit"] = hd95_unit(d / "val_cases.csv", cases, ep)
        if rows and stats["hd95_unit"] != rows[0]["hd95_unit"]:
            raise CompareError(
                f"{dirs[0]} and {d}: HD95 in {rows[0]['hd95_unit']} vs {stats['hd95_unit']}; not comparable"
            )
        classes += [c for c in cls if c not in classes]
        epochs.append(ep)
        rows.append(
            {
                "run": names[i] if names else model,
                "model": model,
                "run_dir": str(d),
                "epoch": ep,
                "params": summary.get("params"),
                "trainable_params": summary.get("trainable_params"),
                **stats,
                "train_time_s": summary.get("train_time_s"),
                "peak_memory_mb": summary.get("peak_memory_mb"),
                "peak_memory_kind": summary.get("peak_memory_kind"),
                "weights": describe(summary.get("weights")),  # random | <file> (sha256 ...) | unknown
                "eval_protocol": (summary.get("eval_protocol") or {}).get("id", "unknown"),
            }
        )
        if not summary.get("weights"):
            notes.append(f"{d}: run_summary.json does not say where its weights came from")
        elif summary["weights"].get("source") == "random":
            notes.append(f"{d}: {model} started from RANDOM weights")
    protocols = sorted({r["eval_protocol"] for r in rows})
    if len(protocols) > 1:
        notes.append("the arms were scored under different evaluation protocols: " + ", ".join(protocols))
    labels = [r["run"] for r in rows]
    if len(set(labels)) < len(labels):  # same model twice: tell the runs apart by their folder
        for r, d in zip(rows, dirs):
            r["run"] = f"{r['run']} ({d.resolve().name})"

    write_csv(out / "comparison.csv", rows)
    plot_dice(out / "comparison_dice.png", rows, classes)

    vis = [d / "vis" / f"epoch_{ep:03d}" if ep is not None else None for d, ep in zip(dirs, epochs)]
    grids: list[str] = []
    absent = [str(v or d / "vis") for v, d in zip(vis, dirs) if v is None or not v.is_dir()]
    if absent:
        notes.append("grids skipped: no visualisations at " + ", ".join(absent))
    else:
        full = [r["run"] for r in rows]
        short = short_names(full)
        if short != full:
            notes.append("grid columns: " + ", ".join(f"`{s}` = {f}" for s, f in zip(short, full)))
        try:
            grids = make_grids(out, vis, short)
        except (OSError, ValueError) as exc:
            notes.append(f"grids skipped: {exc}")
        if not grids and not any("grids skipped" in n for n in notes):
            notes.append("grids skipped: no case was visualised by every run")
    write_markdown(out / "comparison.md", rows, classes, notes, "comparison_dice.png", grids)
    from medseg.report import report_or_warning

    report_or_warning(out, kind="compare")  # report.html; a failure is a WARNING
    return rows
