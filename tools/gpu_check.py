"""``make gpu-check``: the GPU path checked in one command, on one CUDA device, in at most 8 minutes.

Stages (each a subprocess with its own time box; a failing or timed-out stage is recorded and the next
one runs):

1. ``pytest -m gpu``: the CPU suite's device-parametrised assertions on CUDA (tests/conftest.py ``DEVICES``).
2. ``tools/demo.py --device cuda``: the 2D + 3D demo with ``trainer.device=cuda``.
3. ``bench/run.py --device cuda``, one stage per section (overhead, inference, clips, MFU), all writing
   one results file (``--update``): the goals' rows (13 organs @512, clips @512 and @1024, MFU @1024 at
   the best batch).
4. ``bench/model_comparison.py --gpu``: the GPU columns of docs/MODEL_COMPARISON.md.

Everything lands in one folder (default ``gpu_check_out/<UTC date-time>/``): one log per stage, the bench
results, and a one-page ``summary.md`` + ``summary.json``. Without a CUDA device it prints one line
``no CUDA device: skipped`` and exits 0.

The device machine may lack hydra, omegaconf, sam2, monai, nibabel and segment-anything: ``make gpu-pkgs``
copies them (pure Python) from .venv into ``.gpu_pkgs/``, which this script puts on PYTHONPATH of every
stage (see docs/GPU.md).

    python3 tools/gpu_check.py [--out DIR] [--budget 450]
    .venv/bin/python tools/gpu_check.py --copy-pkgs .gpu_pkgs     # what `make gpu-pkgs` runs
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG_DIR = ROOT / ".gpu_pkgs"
SKIP_LINE = "no CUDA device: skipped"
BUDGET_S = 450  # all stages together, under the 8 minutes of the issue (process starts included)

# distributions copied by --copy-pkgs: pure-Python packages the device machine lacks, with their own
# pure-Python dependencies (omegaconf -> antlr4 + PyYAML, whose C part is optional; sam2 -> iopath ->
# portalocker) and pytest's. Compiled ones (SimpleITK, torchvision) cannot travel: the code paths checked
# here import neither (SimpleITK only for DICOM/NRRD; segment_anything's predictor needs torchvision).
GPU_PKGS = (
    "PyYAML",
    "pytest",
    "pluggy",
    "iniconfig",
    "packaging",
    "pygments",
    "hydra-core",
    "omegaconf",
    "antlr4-python3-runtime",
    "sam2",
    "iopath",
    "portalocker",
    "monai",
    "nibabel",
    "segment-anything",
)


# the test files with CUDA cases (device-parametrised or marked gpu): named, so that collecting the rest of
# the suite (modules that import ultralytics, wandb, nbclient, ... absent on the device) cannot fail the lane
GPU_TESTS = (
    "tests/func_3d/test_propagate.py",
    "tests/func_3d/test_parity_3d.py",
    "tests/medseg/train/test_engine_toy.py",
    "tests/medseg/train/test_distributed.py",
    "tests/bench/test_bench.py",
)


@dataclass
class Stage:
    """One time-boxed subprocess: ``argv`` run in the repository root with ``env`` added."""

    name: str
    argv: list[str]
    timeout_s: float
    env: dict[str, str] = field(default_factory=dict)


def stage_env(pkg_dir: Path = PKG_DIR) -> dict[str, str]:
    """PYTHONPATH with the copied packages and the repository first; the Makefile's environment."""
    path = [str(pkg_dir), str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {
        "PYTHONPATH": os.pathsep.join(dict.fromkeys(path)),
        "YOLO_OFFLINE": "1",
        "YOLO_CONFIG_DIR": str(ROOT / ".cache" / "ultralytics"),
        "MPLBACKEND": "Agg",
        "PYTHONUTF8": "1",
    }


def run_stage(stage: Stage, out: Path, timeout_s: float) -> dict:
    """Run one stage, its stdout+stderr into ``out/<name>.log``; its whole process group is killed after
    ``timeout_s``. Returns its record: status ``ok`` / ``failed`` / ``timeout`` / ``skipped``."""
    log = out / f"{stage.name}.log"
    rec = {"name": stage.name, "cmd": " ".join(stage.argv), "log": log.name, "timeout_s": round(timeout_s)}
    if timeout_s <= 0:
        return {**rec, "status": "skipped", "rc": None, "seconds": 0.0, "note": "time budget spent"}
    t0 = time.time()
    with open(log, "w", encoding="utf-8") as f:
        f.write(f"$ {rec['cmd']}\n")
        f.flush()
        p = subprocess.Popen(
            stage.argv,
            cwd=ROOT,
            stdout=f,
            stderr=subprocess.STDOUT,
            env={**os.environ, **stage.env},
            start_new_session=True,  # pytest / bench children are killed with it
        )
        try:
            rc = p.wait(timeout=timeout_s)
            status = "ok" if rc == 0 else "failed"
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            rc = p.wait()
            status = "timeout"
    rec.update(status=status, rc=rc, seconds=round(time.time() - t0, 1))
    lines = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    rec["last_line"] = lines[-1][-300:] if lines else ""
    return rec


def run_stages(stages: list[Stage], out: Path, budget_s: float, on_stage=None) -> list[dict]:
    """Every stage in order, each within min(its own time box, what is left of ``budget_s``); a failed or
    timed-out stage is recorded and the next one runs. ``on_stage(records)`` after each stage."""
    t0, records = time.time(), []
    for st in stages:
        left = budget_s - (time.time() - t0)
        records.append(run_stage(st, out, min(st.timeout_s, left)))
        print(
            f"[gpu-check] {st.name}: {records[-1]['status']} ({records[-1]['seconds']} s)",
            flush=True,
        )
        if on_stage:
            on_stage(records)
    return records


def default_stages(out: Path, py: str = sys.executable) -> list[Stage]:
    env = stage_env()
    results, page = out / "bench_results.json", out / "BENCHMARKS_gpu.md"
    bench = [
        py,
        "bench/run.py",
        "--device",
        "cuda",
        "--update",
        "--results",
        str(results),
        "--doc",
        str(page),
    ]
    sections = ("2d", "3d", "inference", "memory", "per_size", "clips", "mfu", "loader")

    def only(*keep: str) -> list[str]:
        return ["--skip", ",".join(s for s in sections if s not in keep)]

    return [
        Stage("pytest_gpu", [py, "-m", "pytest", *GPU_TESTS, "-m", "gpu", "-q", "-p", "no:cacheprovider", "-rs",
                             f"--junitxml={out / 'pytest_gpu.xml'}"], 80, env),
        Stage("demo_cuda", [py, "tools/demo.py", "--device", "cuda", "--out", str(out / "demo")], 110, env),
        Stage("bench_overhead", [*bench, *only("2d", "3d")], 45, env),
        Stage("bench_inference", [*bench, *only("inference")], 75, env),
        Stage("bench_clips", [*bench, *only("clips")], 70, env),
        Stage("bench_mfu", [*bench, *only("mfu")], 60, env),
        Stage("model_comparison_gpu", [py, "bench/model_comparison.py", "--gpu", "--gpu-out",
                                       str(out / "model_comparison_gpu.json")], 40, env),
    ]  # fmt: skip


# ------------------------------------------------------------------------------------------ summary
def goals(results: dict) -> list[dict]:
    """The issue's goals, each with the value measured in ``results`` (bench/run.py's JSON) or None."""
    rows: list[dict] = []

    def add(what, value, goal, ok):
        rows.append({"what": what, "value": value, "goal": goal, "pass": None if value is None else ok})

    for x in results.get("inference_vs_meta") or []:
        name = f"inference {x.get('organs')} organs x {x.get('slices')} sl @{x.get('image_size')}"
        if "oom" in x:
            add(name, x["oom"], "runs", False)
            continue
        if x.get("image_size", 0) >= 512:
            add(f"{name}: speedup vs Meta", x["speedup"], ">= 8", x["speedup"] >= 8)
        add(f"{name}: min Dice vs Meta", x["dice_min"], ">= 0.999", x["dice_min"] >= 0.999)
    for x in results.get("train_clips_3d_all") or []:
        name = f"3D clips {x.get('clips')} x 8 frames @{x.get('image_size')}"
        if "oom" in x:
            add(name, x["oom"], "runs", False)
        else:
            g = x["speedup_vs_bare"]
            add(f"{name}: batched vs bare single-clip", g, ">= 6" if x["image_size"] == 512 else "-", g >= 6)
            add(
                f"{name}: peak GB (bf16)", (x.get("peak_memory_mb") or {}).get("batched", 0) / 1024, "-", True
            )
    for key, name in (
        ("train_step_overhead_3d", "3D step overhead"),
        ("train_step_overhead_2d", "2D step overhead"),
    ):
        x = results.get(key)
        if x:
            add(f"{name} vs bare @{x.get('image_size', '?')}", x["ratio"], "<= 1.05", x["ratio"] <= 1.05)
    for x in results.get("mfu_2d") or []:
        name = f"2D MFU {x.get('variant')} @{x.get('image_size')}, batch {x.get('images')}"
        if "oom" in x:
            add(name, x["oom"], "runs", False)
        else:
            add(name, x["mfu"], ">= 0.20" if x["variant"].endswith("_l") else "-", x["mfu"] >= 0.2)
    return rows


def write_summary(out: Path, records: list[dict], info: dict) -> dict:
    """``summary.json`` and the one-page ``summary.md`` from the stage records and the bench results."""
    try:
        results = json.loads((out / "bench_results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        results = {}
    try:
        g = goals(results)
    except (KeyError, TypeError, ValueError) as e:  # a partial results file: say so, keep the summary
        g = [{"what": "goals", "value": None, "goal": None, "pass": None, "error": repr(e)}]
    s = {**info, "stages": records, "goals": g, "all_green": all(r["status"] == "ok" for r in records)}
    (out / "summary.json").write_text(json.dumps(s, indent=1), encoding="utf-8")
    L = [
        "# GPU check",
        "",
        f"- Device: {info.get('device')}; torch {info.get('torch')}; started {info.get('date')}",
        f"- Wall time: {info.get('wall_s', '?')} s (budget {info.get('budget_s')} s); all stages green: "
        f"**{s['all_green']}**",
        "",
        "| stage | status | s | log | last line |",
        "|---|---|---|---|---|",
    ]
    for r in records:
        last = r.get("last_line", r.get("note", "")).replace("|", "/")
        L.append(f"| {r['name']} | {r['status']} | {r['seconds']} | {r['log']} | {last} |")
    L += ["", "| goal | measured | target | pass |", "|---|---|---|---|"]
    for x in g:
        v = x["value"]
        v = f"{v:.4g}" if isinstance(v, float) else ("not measured" if v is None else str(v))
        L.append(f"| {x['what']} | {v} | {x['goal']} | {x['pass']} |")
    (out / "summary.md").write_text("\n".join(L) + "\n", encoding="utf-8")
    return s


# ------------------------------------------------------------------------------------------ packages
def copy_pkgs(dest: Path, names: tuple[str, ...] = GPU_PKGS) -> list[str]:
    """Copy the installed files of each distribution (from its RECORD) into ``dest``; nothing outside
    site-packages (console scripts) is copied. Returns the distributions copied."""
    import importlib.metadata as md

    dest.mkdir(parents=True, exist_ok=True)
    done = []
    for name in names:
        dist = md.distribution(name)
        base = Path(dist.locate_file("")).resolve()
        for f in dist.files or []:
            src = Path(dist.locate_file(f)).resolve()
            if base not in src.parents or not src.is_file() or src.suffix == ".pyc":
                continue
            target = dest / src.relative_to(base)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
        done.append(f"{name}=={dist.version}")
    return done


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None, help="output folder (default gpu_check_out/<UTC date-time>)")
    ap.add_argument("--budget", type=float, default=BUDGET_S, help="seconds for all stages together")
    ap.add_argument("--copy-pkgs", metavar="DIR", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.copy_pkgs:
        print("copied " + ", ".join(copy_pkgs(Path(a.copy_pkgs))) + f" into {a.copy_pkgs}")
        return 0
    import torch

    if not torch.cuda.is_available():
        print(SKIP_LINE)
        return 0
    t0 = time.time()
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%d-%H%M%S")
    out = Path(a.out) if a.out else ROOT / "gpu_check_out" / stamp
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    info = {
        "date": stamp,
        "device": torch.cuda.get_device_name(0),
        "device_count": torch.cuda.device_count(),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "budget_s": a.budget,
    }

    def save(records):
        write_summary(out, records, {**info, "wall_s": round(time.time() - t0)})

    records = run_stages(default_stages(out), out, a.budget, on_stage=save)
    save(records)
    print(f"[gpu-check] wrote {out / 'summary.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
