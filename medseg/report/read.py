"""What a report reads from a folder: tables, summaries, Hydra's overrides, the code's commit, the facts
that make its numbers reproducible."""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FILES = "report_files"


# ---------------------------------------------------------------------------------------------- reading
def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _csv(path: Path) -> list[dict]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def _float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _mean(vals: list[float]) -> float:
    v = [x for x in vals if math.isfinite(x)]
    return sum(v) / len(v) if v else math.nan


def _std(vals: list[float]) -> float:
    v = [x for x in vals if math.isfinite(x)]
    if len(v) < 2:
        return 0.0 if v else math.nan
    m = sum(v) / len(v)
    return math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))


def _overrides(folder: Path) -> list[str]:
    ov = folder / ".hydra" / "overrides.yaml"
    if not ov.is_file():
        return []
    return [
        x.strip()[2:].strip()
        for x in ov.read_text(encoding="utf-8").splitlines()
        if x.strip().startswith("- ")
    ]


def git_commit() -> str | None:
    """The code's git commit (``+dirty`` with uncommitted changes), None outside a checkout."""
    try:
        run = lambda *a: subprocess.run(  # noqa: E731
            ["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10
        )
        head = run("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return head.stdout.strip() + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def detect_kind(folder: Path) -> str:
    """compare | sweep | inference | run (what the folder holds)."""
    if (folder / "comparison.csv").is_file():
        return "compare"
    if (folder / "sweep_summary.csv").is_file():
        return "sweep"
    if _json(folder / "run_summary.json").get("task") == "inference_3d":
        return "inference"
    if any((folder / n).is_file() for n in ("run_summary.json", "metrics.csv", "val_cases.csv")):
        return "run"
    raise FileNotFoundError(
        f"{folder}: no run_summary.json, metrics.csv, val_cases.csv, comparison.csv or sweep_summary.csv to report"
    )


# ---------------------------------------------------------------------------------------------- facts
def _weights(w: Any) -> str:
    if not isinstance(w, dict):
        return "unknown"
    if w.get("source") == "random":
        return "RANDOM initialisation (no weights file)"
    s = str(w.get("path") or w.get("source") or "?")
    if w.get("sha256"):
        s += f" (sha256 {w['sha256']})"
    enc = w.get("encoder")
    return s + (f"; encoder: {_weights(enc)}" if enc else "")


def facts(folder: Path, summary: dict, context: dict) -> list[tuple[str, str]]:
    """The rows of the reproducibility table."""
    cfg = _json(folder / FILES / "config.json") or context.get("config") or {}
    try:
        from omegaconf import OmegaConf

        if (folder / ".hydra" / "config.yaml").is_file():
            cfg = OmegaConf.to_container(OmegaConf.load(folder / ".hydra" / "config.yaml"), resolve=False)
    except Exception:  # an unreadable config is reported as unknown, never a failed report
        pass
    model = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    data = cfg.get("dataset") if isinstance(cfg.get("dataset"), dict) else {}
    trainer = cfg.get("trainer") if isinstance(cfg.get("trainer"), dict) else {}
    protocol = summary.get("eval_protocol") or {}
    overrides = _overrides(folder) or context.get("overrides") or []
    script = context.get("script") or cfg.get("task_name") or ""
    rows = [
        (
            "command",
            f"python {script}.py " * bool(script) + " ".join(overrides) if overrides or script else "unknown",
        ),
        (
            "model",
            str(summary.get("model") or model.get("name") or context.get("model") or "unknown")
            + (f" ({model.get('variant')}, {model.get('image_size')} px)" if model.get("variant") else ""),
        ),
        ("weights", _weights(summary.get("weights"))),
        ("checkpoint", str(summary.get("checkpoint") or model.get("checkpoint") or "")),
        (
            "evaluation protocol",
            str(protocol.get("id") or "unknown")
            + "".join(f"; {k}: {protocol[k]}" for k in ("box", "first_click", "objects") if protocol.get(k)),
        ),
        (
            "dataset",
            f"{data.get('name', '')} {data.get('root', '')}".strip() or str(context.get("dataset") or ""),
        ),
        (
            "split",
            str(summary.get("split") or (summary.get("split_file") and "splits.json (train/val/test)") or ""),
        ),
        ("seed", str(cfg.get("seed", ""))),
        ("device", str(summary.get("device") or trainer.get("device") or "")),
        (
            "epochs / steps",
            f"{summary.get('epochs', '')} / {summary.get('steps', '')}" if "epochs" in summary else "",
        ),
        ("best", json.dumps(summary.get("best")) if summary.get("best") else ""),
        ("train time (s)", f"{_float(summary.get('train_time_s')):.1f}" if "train_time_s" in summary else ""),
        ("git commit", str(context.get("git_commit") or "unknown")),
        ("run written", context.get("run_date") or _mtime(folder / "run_summary.json")),
        ("report written", _dt.datetime.now().astimezone().isoformat(timespec="seconds")),
    ]
    return [(k, v) for k, v in rows if v]


def _mtime(path: Path) -> str:
    try:
        t = path.stat().st_mtime
    except OSError:
        return ""
    return _dt.datetime.fromtimestamp(t).astimezone().isoformat(timespec="seconds")
