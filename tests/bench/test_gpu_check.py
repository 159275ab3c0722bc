"""tools/gpu_check.py (``make gpu-check``): one line and exit 0 without CUDA; every stage time-boxed and
independent, the summary written after each (fake stages: no GPU needed)."""

from __future__ import annotations

import json
import sys

import torch

from tests.conftest import ROOT, run_cli
from tools import gpu_check


def test_without_cuda_one_line_and_exit_0(tmp_path):
    assert not torch.cuda.is_available()  # this suite's CPU machines; the GPU lane runs the stages
    p = run_cli(ROOT / "tools" / "gpu_check.py", "--out", tmp_path / "out")
    assert p.returncode == 0 and p.stdout == gpu_check.SKIP_LINE + "\n", (p.stdout, p.stderr)
    assert not (tmp_path / "out").exists()  # nothing written


def test_a_failing_and_a_timed_out_stage_are_recorded_and_the_next_runs(tmp_path):
    py = sys.executable
    stages = [
        gpu_check.Stage("fails", [py, "-c", "import sys; print('boom'); sys.exit(3)"], 30),
        gpu_check.Stage("hangs", [py, "-c", "import time; print('waiting', flush=True); time.sleep(60)"], 1),
        gpu_check.Stage("works", [py, "-c", "print('fine')"], 30),
        gpu_check.Stage("late", [py, "-c", "print('never')"], 30),
    ]
    seen = []
    recs = gpu_check.run_stages(stages[:3], tmp_path, budget_s=60, on_stage=lambda r: seen.append(len(r)))
    assert [(r["name"], r["status"], r["rc"]) for r in recs] == [
        ("fails", "failed", 3),
        ("hangs", "timeout", -9),
        ("works", "ok", 0),
    ]
    assert seen == [1, 2, 3] and recs[1]["seconds"] < 20
    assert recs[0]["last_line"] == "boom" and recs[1]["last_line"] == "waiting"
    assert (tmp_path / "works.log").read_text(encoding="utf-8").endswith("fine\n")
    # the budget is shared: a stage with nothing left is recorded as skipped, not run
    late = gpu_check.run_stages(stages[3:], tmp_path, budget_s=0)
    assert late[0]["status"] == "skipped" and not (tmp_path / "late.log").exists()

    results = {
        "inference_vs_meta": [
            {"image_size": 512, "slices": 64, "organs": 13, "speedup": 9.0, "dice_min": 0.9995},
            {"image_size": 64, "slices": 12, "organs": 13, "speedup": 2.0, "dice_min": 0.998},
        ],
        "train_clips_3d_all": [{"image_size": 1024, "clips": 4, "oom": "OOM at 139 GB"}],
    }
    (tmp_path / "bench_results.json").write_text(json.dumps(results), encoding="utf-8")
    s = gpu_check.write_summary(tmp_path, recs + late, {"device": "fake", "budget_s": 60})
    assert not s["all_green"]
    assert (
        json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))["stages"][1]["status"]
        == "timeout"
    )
    md = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert "| hangs | timeout |" in md and "OOM at 139 GB" in md
    got = {g["what"]: g["pass"] for g in s["goals"]}
    assert got["inference 13 organs x 64 sl @512: speedup vs Meta"] is True
    assert got["inference 13 organs x 12 sl @64: min Dice vs Meta"] is False


def test_gpu_pkgs_copies_a_distribution_with_its_files(tmp_path):
    """`make gpu-pkgs`: the installed files of a distribution (from its RECORD), importable from the copy."""
    assert gpu_check.copy_pkgs(tmp_path, ("omegaconf",))[0].startswith("omegaconf==")
    assert (tmp_path / "omegaconf" / "__init__.py").is_file()
    assert not list(tmp_path.rglob("*.pyc")) and not (tmp_path / "bin").exists()


def test_the_gpu_lane_names_every_file_with_cuda_cases():
    """pytest_gpu runs only GPU_TESTS (the rest of the suite imports packages the device lacks): every test
    file that uses the ``device`` fixture or the ``gpu`` marker must be in it."""
    uses = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "tests").rglob("test_*.py")
        if p.name != "test_gpu_check.py"
        and "mark.gpu" in (t := p.read_text(encoding="utf-8"))
        or "(device)" in t
        or ", device)" in t
    }
    assert uses and uses <= set(gpu_check.GPU_TESTS), uses - set(gpu_check.GPU_TESTS)
    assert all((ROOT / f).is_file() for f in gpu_check.GPU_TESTS)
