"""The report renderer without a browser: the size budget, folders without the optional files, a failure
that keeps the folder as it was, and ``tools/report.py``'s one-line errors."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pytest

from medseg.report import report_or_warning, write_report
from tests.fault_helpers import snapshot

ROOT = Path(__file__).resolve().parents[3]


class Volumes:
    """A dataset of ``n`` noisy volumes (``depth`` x 64 x 64) with two organs, as inference reads it."""

    label_names = {0: "background", 1: "liver", 2: "spleen"}

    def __init__(self, n: int, depth: int):
        self.case_ids = [f"case_{i:03d}" for i in range(n)]
        self.depth = depth

    def load_case(self, cid: str) -> dict:
        rng = np.random.default_rng(int(cid[-3:]))
        label = np.zeros((self.depth, 64, 64), np.uint8)
        label[self.depth // 2 :, 10:30, 10:30] = 1
        label[:, 40:50, 40:60] = 2
        return {"image": rng.normal(size=(self.depth, 64, 64)).astype(np.float32), "label": label}


def inference_folder(folder: Path, ds: Volumes) -> Path:
    folder.mkdir(parents=True)
    (folder / "run_summary.json").write_text(
        json.dumps({"task": "inference_3d", "split": "all"}), encoding="utf-8"
    )
    rows = ["case_id,class_id,class_name,dice,iou,hd95,hd95_unit,status"]
    for i, cid in enumerate(ds.case_ids):
        np.save(folder / f"{cid}.npy", ds.load_case(cid)["label"])
        rows += [f"{cid},1,liver,{0.1 * i},{0.05 * i},{3 + i},mm,ok", f"{cid},2,spleen,0.9,0.8,1.0,mm,ok"]
    (folder / "metrics.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return folder


def size(folder: Path) -> int:
    return sum(
        p.stat().st_size
        for p in [folder / "report.html", *(folder / "report_files").rglob("*")]
        if p.is_file()
    )


def test_size_budget_is_respected_and_says_what_it_left_out(tmp_path):
    ds = Volumes(n=12, depth=40)  # noise: ~40 kB a slice, ~20 MB for every slice of every case
    folder = inference_folder(tmp_path / "preds", ds)
    write_report(folder, dataset=ds, max_mb=0.5)
    assert size(folder) <= 0.5 * 2**20
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert html.count('<tr data-case="') == 12
    assert "every " in html or "left out" in html  # fewer slices per volume, or pictures left out
    assert "case_000" in html.split('<tr data-case="')[1]  # worst (lowest mean Dice) first
    write_report(folder, dataset=ds, max_mb=5)  # a larger budget: more slices, never more than it
    assert 0.5 * 2**20 < size(folder) <= 5 * 2**20


def test_every_slice_of_a_small_volume_and_the_key_slice_marked(tmp_path):
    ds = Volumes(n=1, depth=8)
    folder = inference_folder(tmp_path / "preds", ds)
    write_report(folder, dataset=ds)
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert len(list((folder / "report_files").glob("case_000_z*.jpg"))) == 8
    assert 'data-key="4"' in html  # the slice with the most reference voxels (liver on 4..7 + spleen)
    assert "liver" in html and "spleen" in html  # the legend


def test_run_folder_without_the_optional_files(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "metrics.csv").write_text(
        "epoch,step,train/loss,val/dice\n1,1,2.0,0.3\n2,2,1.5,0.4\n", encoding="utf-8"
    )
    write_report(folder)  # no run_summary.json, .hydra/, val_cases.csv, vis/
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert "<svg" in html and "unknown" in html and "no pictures" in html


def test_inference_whose_data_moved_is_still_reported(tmp_path):
    ds = Volumes(n=2, depth=4)
    folder = inference_folder(tmp_path / "preds", ds)
    (folder / "report_files").mkdir()
    ctx = {
        "dataset_cfg": {
            "_target_": "medseg.data.datasets.nnunet.NnUNetDataset",
            "root": str(tmp_path / "gone"),
        }
    }
    (folder / "report_files" / "context.json").write_text(json.dumps(ctx), encoding="utf-8")
    write_report(folder)
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert html.count('<tr data-case="') == 2 and "the dataset could not be opened" in html


def test_a_failing_report_is_a_warning_and_keeps_the_folder(tmp_path, monkeypatch, caplog):
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "metrics.csv").write_text("epoch,step,val/dice\n1,1,0.3\n", encoding="utf-8")
    write_report(folder)
    before = snapshot(folder)
    from medseg.report import render

    def broken(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(render, "run_page", broken)
    with caplog.at_level(logging.WARNING):
        assert report_or_warning(folder) is None
    assert "report.html not written" in caplog.text and "boom" in caplog.text
    assert snapshot(folder) == before and not (folder / "report_files.new").exists()
    assert report_or_warning(tmp_path / "empty") is None  # nothing to report on: a warning too


def test_rerender_touches_only_the_report(tmp_path):
    ds = Volumes(n=2, depth=4)
    folder = inference_folder(tmp_path / "preds", ds)
    before = snapshot(folder)
    write_report(folder, dataset=ds)
    write_report(folder, dataset=ds)
    after = {k: v for k, v in snapshot(folder).items() if not k.startswith("report")}
    assert after == before


@pytest.mark.parametrize("bad", ["missing", "--max-mb=0"])
def test_tool_refuses_in_one_line(tmp_path, bad, capsys):
    sys.path.insert(0, str(ROOT / "tools"))
    import report as tool

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "metrics.csv").write_text("epoch,step,val/dice\n1,1,0.3\n", encoding="utf-8")
    before = snapshot(folder)
    args = [str(tmp_path / "nothing")] if bad == "missing" else [str(folder), bad]
    assert tool.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert snapshot(folder) == before
    assert tool.main([str(folder)]) == 0 and (folder / "report.html").is_file()
