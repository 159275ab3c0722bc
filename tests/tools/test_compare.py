"""tools/compare.py on tiny fake run folders (the files the engine writes, made by hand)."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import ROOT, run_cli

TOOL = ROOT / "tools" / "compare.py"
CASES = ["c1", "c2", "c3"]
H = 32

# (case, class, dice, status) of the chosen validation; iou = dice / 2, hd95 = 10 * (1 - dice)
GOOD = [
    ("c1", "liver", 0.9, "ok"),
    ("c1", "tumor", 0.5, "ok"),
    ("c2", "liver", 0.8, "ok"),
    ("c2", "tumor", math.nan, "empty_both"),
    ("c3", "liver", 0.7, "ok"),
    ("c3", "tumor", 0.0, "missed"),
]


def _load_tool():
    spec = importlib.util.spec_from_file_location("compare_tool", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _grid(pred_color: tuple[int, int, int], k: int = 3) -> np.ndarray:
    panels = [
        np.full((H, H, 3), 40, np.uint8),
        np.full((H, H, 3), 120, np.uint8),
        np.full((H, H, 3), pred_color, np.uint8),
        np.full((H, H, 3), 7, np.uint8),
    ][:k]
    sep = np.full((H, 2, 3), 255, np.uint8)
    out = panels[0]
    for p in panels[1:]:
        out = np.concatenate([out, sep, p], axis=1)
    return out


def make_run(
    root: Path,
    name: str,
    model: str,
    *,
    scale: float,
    best: int | None,
    epochs: list[int],
    vis_cases: list[str] | None,
    color=(255, 0, 0),
    val=CASES,
    test=("t1", "t2"),
    write_cases: bool = True,
) -> Path:
    run = root / name
    (run / ".hydra").mkdir(parents=True)
    (run / "splits.json").write_text(
        json.dumps({"train": ["a", "b"], "val": list(val), "test": list(test)}), encoding="utf-8"
    )
    (run / ".hydra" / "config.yaml").write_text(f"model:\n  name: {model}\n  lr: 0.1\n", encoding="utf-8")
    rows = []
    for ep in epochs:
        f = scale if ep == epochs[-1] or ep == best else 0.1  # other epochs get junk values
        for case, cls, d, status in GOOD:
            dice = d * f if status != "empty_both" else math.nan
            rows.append(
                {
                    "epoch": ep,
                    "case_id": case,
                    "class_id": 1 if cls == "liver" else 2,
                    "class_name": cls,
                    "dice": "" if math.isnan(dice) else dice,
                    "iou": "" if math.isnan(dice) else dice / 2,
                    "hd95": "" if math.isnan(dice) else 10 * (1 - dice),
                    "tp": 1,
                    "fp": 0,
                    "fn": 0,
                    "pred_voxels": 1,
                    "target_voxels": 1,
                    "status": status,
                }
            )
    if write_cases:
        with open(run / "val_cases.csv", "w", encoding="utf-8", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=list(rows[0]))
            w.writeheader()
            w.writerows(rows)
    (run / "metrics.csv").write_text(
        "epoch,step,val/dice,time_s\n" + "".join(f"{e},{e},,1\n" for e in epochs), encoding="utf-8"
    )
    summary = {
        "model": model,
        "params": 1000 * len(model),
        "trainable_params": 10,
        "train_time_s": 12.5,
        "peak_memory_mb": 321.0,
        "peak_memory_kind": "host_rss",
        "device": "cpu",
        "best": {"metric": "val/dice", "value": 0.5, "epoch": best},
        "last": {},
    }
    (run / "run_summary.json").write_text(json.dumps(summary), encoding="utf-8")
    if vis_cases is not None:
        ep = best if best in epochs else epochs[-1]
        vis = run / "vis" / f"epoch_{ep:03d}"
        vis.mkdir(parents=True)
        for c in vis_cases:
            Image.fromarray(_grid(color)).save(vis / f"{c}.png")
    return run


def run_tool(*args) -> subprocess.CompletedProcess:
    return run_cli(TOOL, *args, timeout=120)


def test_compare_three_runs(tmp_path):
    a = make_run(
        tmp_path, "run_a", "sam2", scale=1.0, best=2, epochs=[1, 2, 3], vis_cases=CASES, color=(255, 0, 0)
    )
    b = make_run(
        tmp_path, "run_b", "unet", scale=0.5, best=1, epochs=[1], vis_cases=["c1", "c2"], color=(0, 255, 0)
    )
    # best epoch 4 is no longer in val_cases.csv (the engine rewrites it): falls back to the last (5)
    c = make_run(
        tmp_path,
        "run_c",
        "yolo",
        scale=0.8,
        best=4,
        epochs=[5],
        vis_cases=["c2", "c1", "c3"],
        color=(0, 0, 255),
    )
    out = tmp_path / "cmp"
    res = run_tool(a, b, c, "--out", out)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(out / "comparison.md")

    with open(out / "comparison.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["model"] for r in rows] == ["sam2", "unet", "yolo"]
    assert [r["epoch"] for r in rows] == ["2", "1", "5"]
    applicable = [d for _, _, d, s in GOOD if s != "empty_both"]  # 0.9, 0.5, 0.8, 0.7, 0.0
    for r, scale in zip(rows, (1.0, 0.5, 0.8)):
        assert float(r["dice_mean"]) == pytest.approx(0.58 * scale)
        assert float(r["dice_std"]) == pytest.approx(np.std(np.array(applicable) * scale, ddof=1), rel=1e-5)
        assert float(r["dice/liver_mean"]) == pytest.approx(0.8 * scale)
        assert float(r["dice/tumor_mean"]) == pytest.approx(0.25 * scale)
        assert int(r["dice/tumor_n"]) == 2 and int(r["dice_n"]) == 5
        assert float(r["iou_mean"]) == pytest.approx(0.29 * scale)
        assert r["params"] and r["train_time_s"] == "12.5" and r["peak_memory_mb"] == "321"

    md = (out / "comparison.md").read_text(encoding="utf-8")
    for name in ("sam2", "unet", "yolo", "0.5800 ± "):
        assert name in md
    assert "epoch 4 is not in val_cases.csv" in md

    with Image.open(out / "comparison_dice.png") as im:
        im.load()
        assert im.size[0] > 100

    grids = sorted(p.name for p in (out / "grids").glob("*.png"))
    assert grids == ["c1.png", "c2.png"]
    g = np.asarray(Image.open(out / "grids" / "c1.png").convert("RGB"))
    assert g.shape[1] == 5 * H + 4 * 2  # image | GT | 3 predictions
    body = g[-H:]
    for j, color in zip(range(2, 5), [(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        assert tuple(body[H // 2, j * (H + 2) + H // 2]) == color


def test_names_and_last_epoch(tmp_path):
    a = make_run(tmp_path, "a", "sam2", scale=1.0, best=2, epochs=[1, 2, 3], vis_cases=None)
    b = make_run(tmp_path, "b", "sam2", scale=0.5, best=1, epochs=[1], vis_cases=None)
    out = tmp_path / "o"
    res = run_tool(a, b, "--out", out, "--names", "first,second", "--epoch", "last")
    assert res.returncode == 0, res.stderr
    with open(out / "comparison.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["run"] for r in rows] == ["first", "second"]
    assert rows[0]["epoch"] == "3"
    assert not (out / "grids").exists()
    assert "grids skipped" in (out / "comparison.md").read_text(encoding="utf-8")


def test_different_splits_fail(tmp_path):
    a = make_run(tmp_path, "run_a", "sam2", scale=1.0, best=1, epochs=[1], vis_cases=None)
    b = make_run(
        tmp_path, "run_b", "unet", scale=1.0, best=1, epochs=[1], vis_cases=None, val=["c1", "c2", "c9"]
    )
    res = run_tool(a, b, "--out", tmp_path / "o")
    assert res.returncode != 0
    msg = res.stderr.strip()
    assert len(msg.splitlines()) == 1
    assert str(a) in msg and str(b) in msg and "validation" in msg
    assert not (tmp_path / "o" / "comparison.csv").exists()

    c = make_run(tmp_path, "run_c", "unet", scale=1.0, best=1, epochs=[1], vis_cases=None, test=["t1"])
    res = run_tool(a, c, "--out", tmp_path / "o")
    assert res.returncode != 0 and "test" in res.stderr and str(c) in res.stderr


def test_missing_val_cases(tmp_path):
    a = make_run(tmp_path, "run_a", "sam2", scale=1.0, best=1, epochs=[1], vis_cases=None)
    b = make_run(tmp_path, "run_b", "unet", scale=1.0, best=1, epochs=[1], vis_cases=None, write_cases=False)
    res = run_tool(a, b, "--out", tmp_path / "o")
    assert res.returncode != 0
    msg = res.stderr.strip()
    assert len(msg.splitlines()) == 1 and str(b / "val_cases.csv") in msg

    (a / "splits.json").unlink()
    res = run_tool(a, b, "--out", tmp_path / "o")
    assert res.returncode != 0 and str(a / "splits.json") in res.stderr


def test_split_panels_with_prompt_panel():
    from medseg.eval.figures import split_panels

    panels = split_panels(_grid((1, 2, 3), k=4))
    assert len(panels) == 4 and all(p.shape == (H, H, 3) for p in panels)
    assert tuple(panels[2][0, 0]) == (1, 2, 3)


def _set_units(run: Path, units: list[str]) -> None:
    """Give ``run``'s val_cases.csv an ``hd95_unit`` column, cycling through ``units`` row by row."""
    with open(run / "val_cases.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for i, r in enumerate(rows):
        r["hd95_unit"] = units[i % len(units)]
    with open(run / "val_cases.csv", "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def test_hd95_unit_is_shown_and_never_mixed(tmp_path):
    a = make_run(tmp_path, "a", "sam2", scale=1.0, best=1, epochs=[1], vis_cases=None)
    b = make_run(tmp_path, "b", "unet", scale=0.5, best=1, epochs=[1], vis_cases=None)
    for r in (a, b):
        _set_units(r, ["px"])
    res = run_tool(a, b, "--out", tmp_path / "ok")
    assert res.returncode == 0, res.stderr
    with open(tmp_path / "ok" / "comparison.csv", encoding="utf-8", newline="") as fh:
        assert {r["hd95_unit"] for r in csv.DictReader(fh)} == {"px"}
    assert "HD95 (px)" in (tmp_path / "ok" / "comparison.md").read_text(encoding="utf-8")
    _set_units(b, ["mm"])  # runs in different units
    res = run_tool(a, b, "--out", tmp_path / "across")
    assert res.returncode == 2 and "px vs mm" in res.stderr, res.stderr
    _set_units(a, ["mm", "px"])  # one run whose rows mix units
    res = run_tool(a, "--out", tmp_path / "within")
    assert res.returncode == 2 and str(a / "val_cases.csv") in res.stderr and "units" in res.stderr, (
        res.stderr
    )
