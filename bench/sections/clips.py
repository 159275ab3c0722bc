"""Section ``clips``: 3D training throughput with several clips per step: ours batched vs ours clip by
clip vs the bare single-clip step run once per clip, plus activation checkpointing (time and saved
activations). Writes ``train_clips_3d_all`` and ``train_clips_3d`` (its first row)."""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import torch

from bench.harness import Bench, med
from bench.report.cells import ok_rows
from bench.steps import bare_3d, ours_3d, video_task
from bench.workloads import VARIANT, base_overrides, compose, make_clip, merge_clips

GOAL_SPEEDUP_GPU = 6.0


def saved_activation_mb(fn, model) -> float:
    """MB of the distinct storages autograd keeps for the backward pass during ``fn()`` (parameters
    excluded; inputs kept by checkpointed regions included): bench/activations.py."""
    from bench.activations import saved_bytes

    return saved_bytes(fn, model, flash_like=False) / 2**20


def _peak_memory_mb(bench: Bench, fns: dict) -> dict:
    """Peak CUDA memory of one call of each fn, under the timing's autocast (empty on a CPU)."""
    peak = {k: bench.peak_memory_mb(f) for k, f in fns.items()}
    return {k: v for k, v in peak.items() if v is not None}


def bench_clips_3d(bench: Bench, S: int, B: int, warmup: int, repeats: int) -> dict:
    from sam2_train import build_sam2_model, set_activation_checkpointing

    device = bench.device
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose("train_3d", base_overrides(S, device.type), Path(tmp))
    T, O = 8, 2
    clips = [make_clip(S, T, O, seed=3 + b) for b in range(B)]
    batch = merge_clips(clips)
    base = build_sam2_model(VARIANT, image_size=S).to(device).train()
    models = {k: copy.deepcopy(base) for k in ("batched", "per_clip", "bare", "ckpt")}
    set_activation_checkpointing(models["ckpt"], True)
    steps = {
        "batched": ours_3d(bench, cfg, models["batched"]),
        "per_clip": ours_3d(bench, cfg, models["per_clip"], batch_clips=False),
        "ckpt": ours_3d(bench, cfg, models["ckpt"], checkpointing=True),
    }
    bare = bare_3d(bench, models["bare"])
    fns = {k: (lambda f=f: f(batch)) for k, f in steps.items()}
    fns["bare"] = lambda: [bare(c) for c in clips]
    peak = _peak_memory_mb(bench, fns)
    t = bench.interleaved(fns, warmup, repeats)
    frames = B * T
    fps = {k: frames / med(v) for k, v in t.items()}
    act = {}
    for k in ("batched", "ckpt"):
        task, m = video_task(cfg, checkpointing=k == "ckpt"), models[k]
        act[k] = saved_activation_mb(lambda m=m, task=task: task.training_step(m, batch.to(device)), m)
    return {
        "variant": VARIANT,
        "image_size": S,
        "clips": B,
        "frames_per_clip": T,
        "objects_per_clip": O,
        "seconds": {k: med(v) for k, v in t.items()},
        "all_s": t,
        "frames_per_s": fps,
        "speedup_vs_bare": fps["batched"] / fps["bare"],
        "speedup_vs_per_clip": fps["batched"] / fps["per_clip"],
        "ckpt_time_ratio": med(t["ckpt"]) / med(t["batched"]),
        "saved_activation_mb": act,
        "ckpt_activation_ratio": act["ckpt"] / act["batched"],
        "peak_memory_mb": peak or None,
        "load_avg": os.getloadavg()[0],
        "goal_speedup_gpu": GOAL_SPEEDUP_GPU,
    }


def plan(bench: Bench) -> list[tuple[int, int]]:
    """(px, clips) per row: on a GPU the goals' sizes (8 clips @512, 4 clips @1024)."""
    return [(512, 8), (1024, 4)] if bench.gpu else [(64, 2 if bench.quick else 4)]


def run(bench: Bench) -> None:
    r = bench.results
    r["train_clips_3d_all"] = []
    for S, B in plan(bench):
        bench.log(f"3D clips per step: {B} clips @ {S}")
        x = bench.guarded(
            lambda S=S, B=B: bench_clips_3d(bench, S, B, 1, 3 if bench.quick else 5),
            variant=VARIANT,
            image_size=S,
            clips=B,
        )
        r["train_clips_3d_all"].append(x)
        measured = ok_rows(r["train_clips_3d_all"])
        r["train_clips_3d"] = measured[0] if measured else None
        bench.log(f"  frames/s {x.get('frames_per_s', x.get('oom'))}")
        bench.save()
