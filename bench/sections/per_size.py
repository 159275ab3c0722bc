"""Section ``per_size``: our 2D training step per Hiera size and image size, one fresh process per row
(the ``train_2d`` child, so peak RSS is the row's own). Writes ``per_size`` and ``per_size_skipped``."""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.harness import Bench, med, peak_rss_mb, rss_mb, run_child
from bench.steps import ours_2d
from bench.workloads import VARIANTS, base_overrides, compose, make_2d_batch


def child(bench: Bench, spec: dict) -> dict:
    """In the child process: ``spec["repeats"]`` timed 2D steps of ``spec["variant"]`` at ``spec["size"]``."""
    import torch

    from sam2_train import build_sam2_model

    torch.manual_seed(0)
    S, device = int(spec["size"]), bench.device
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose("train_2d", base_overrides(S, device.type) + [f"model={spec['variant']}"], Path(tmp))
    model = build_sam2_model(spec["variant"], image_size=S).to(device).train()
    batch = make_2d_batch(S, 2)
    step = ours_2d(bench, cfg, model)
    rss0 = rss_mb()
    t = bench.interleaved({"s": lambda: step(batch)}, int(spec["warmup"]), int(spec["repeats"]))["s"]
    n_params = sum(p.numel() for p in model.parameters())
    return {
        "variant": spec["variant"],
        "image_size": S,
        "step_s": med(t),
        "all_s": t,
        "peak_rss_mb": peak_rss_mb(),
        "rss_after_build_mb": rss0,
        "params_m": n_params / 1e6,
    }


def run(bench: Bench) -> None:
    r = bench.results
    r["per_size"], r["per_size_skipped"] = [], []
    for v in VARIANTS:
        for S in bench.sizes:
            if v.endswith("_l") and S > 64 and not bench.gpu:  # minutes per step on a CPU
                r["per_size_skipped"].append(f"{v} @ {S}px")
                continue
            bench.log(f"per_size {v} @ {S}")
            spec = {
                "kind": "train_2d",
                "variant": v,
                "size": S,
                "warmup": 1,
                "repeats": 2 if bench.quick else 3,
            }
            x = run_child({**spec, "threads": bench.threads, "device": str(bench.device)})
            r["per_size"].append(x)
            bench.log(f"  {x.get('step_s', x.get('error'))}")
            bench.save()
