"""Sections ``2d`` and ``3d``: our training step against the bare SAM2 step, interleaved, same weights.

Writes ``train_step_overhead_2d`` / ``train_step_overhead_3d``: medians, the ratio, the forward+backward
split and, when the ratio misses its goal, cProfile tables of both sides.
"""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path

import torch

from bench.harness import Bench, med, repo_profile, top_profile
from bench.steps import bare_2d, bare_3d, ours_2d, ours_3d
from bench.workloads import VARIANT, base_overrides, compose, make_2d_batch, make_clip

GOAL_2D = 1.10
GOAL_3D = 1.10


def summarise(bench: Bench, t: dict, goal: float, repeats: int, warmup: int) -> dict:
    """Medians, the ratio, and the forward+backward-only split (last ``repeats`` marks of each side)."""
    fb = bench.take_split(repeats)
    res = {
        "ours_s": med(t["ours"]),
        "bare_s": med(t["bare"]),
        "ours_all_s": t["ours"],
        "bare_all_s": t["bare"],
        "ratio": med(t["ours"]) / med(t["bare"]),
        "ratio_of_min": min(t["ours"]) / min(t["bare"]),
        "ours_fwd_bwd_s": med(fb["ours"]),
        "bare_fwd_bwd_s": med(fb["bare"]),
        "ratio_fwd_bwd": med(fb["ours"]) / med(fb["bare"]),
        "goal": goal,
        "repeats": repeats,
        "warmup": warmup,
        "load_avg_1min": os.getloadavg()[0],
    }
    res["pass"] = res["ratio"] <= goal
    return res


def _models(bench: Bench, root: str, S: int):
    """(composed config, model, its deep copy) on the bench device, seeded."""
    from sam2_train import build_sam2_model

    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose(root, base_overrides(S, bench.device.type), Path(tmp))
    model_a = build_sam2_model(VARIANT, image_size=S).to(bench.device).train()
    return cfg, model_a, copy.deepcopy(model_a)


def _compare(
    bench: Bench, ours, bare, inputs, warmup: int, repeats: int, goal: float, profile: bool
) -> tuple[dict, dict]:
    """(timing summary, profiles of both sides when ``profile`` and the goal was missed)."""
    t = bench.interleaved({"ours": lambda: ours(inputs), "bare": lambda: bare(inputs)}, warmup, repeats)
    res = summarise(bench, t, goal, repeats, warmup)
    profiles = {}
    if profile and not res["pass"]:
        profiles["profile_ours"] = top_profile(lambda: ours(inputs))
        profiles["profile_bare"] = top_profile(lambda: bare(inputs))
        profiles["profile_ours_repo"] = repo_profile(lambda: ours(inputs))
    return res, profiles


def bench_overhead_2d(bench: Bench, S: int, warmup: int, repeats: int, profile: bool) -> dict:
    cfg, model_a, model_b = _models(bench, "train_2d", S)
    batch = make_2d_batch(S, 2)
    ours, bare = ours_2d(bench, cfg, model_a), bare_2d(bench, model_b)
    res, profiles = _compare(bench, ours, bare, batch, warmup, repeats, GOAL_2D, profile)
    return {
        "variant": VARIANT,
        "image_size": S,
        "batch": "2 images x 1 box",
        **res,
        "notes": "both include clip_grad_norm(1.0) + AdamW step + zero_grad (the engine's optimizer step)",
        **profiles,
    }


def bench_overhead_3d(bench: Bench, S: int, warmup: int, repeats: int, profile: bool) -> dict:
    cfg, model_a, model_b = _models(bench, "train_3d", S)
    clip = make_clip(S, 8, 2)
    ours, bare = ours_3d(bench, cfg, model_a), bare_3d(bench, model_b)
    res, profiles = _compare(bench, ours, bare, clip, warmup, repeats, GOAL_3D, profile)
    return {
        "variant": VARIANT,
        "image_size": S,
        "clip": "8 frames x 2 objects, box on frame 0",
        **res,
        "notes": "ours = SAM2VideoTask.training_step (propagate(train=True) + SAM2Loss on the 3 candidates "
        "+ IoU + object score); bare = track_step per frame + plain 20*focal+dice on the chosen "
        "mask; both include clip_grad_norm(1.0) + AdamW step",
        **profiles,
    }


def _run(bench: Bench, key: str, measure) -> None:
    S = bench.main_size
    bench.log(f"{key} @ {S}")
    repeats = bench.repeats if bench.quick else bench.repeats + 2
    bench.results[key] = x = measure(bench, S, bench.warmup, repeats, profile=True)
    bench.log(f"  ours {x['ours_s']:.3f}s bare {x['bare_s']:.3f}s ratio {x['ratio']:.3f}")
    bench.save()


def run_2d(bench: Bench) -> None:
    _run(bench, "train_step_overhead_2d", bench_overhead_2d)


def run_3d(bench: Bench) -> None:
    _run(bench, "train_step_overhead_3d", bench_overhead_3d)
