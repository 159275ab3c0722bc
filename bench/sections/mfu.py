"""Section ``mfu``: model FLOPs utilisation of our whole 2D training step, against the peak measured in
the same run (a large matmul), plus the image encoder's GFLOP per 1024-px image. Writes ``mfu_2d``."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from bench.harness import Bench, med
from bench.steps import ours_2d
from bench.workloads import base_overrides, compose, make_2d_batch

MFU_VARIANTS = ("sam2.1_hiera_t", "sam2.1_hiera_l")


def matmul_peak(bench: Bench, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of a large matmul on the device (fp32 on CPU; bf16 8192² on CUDA): the MFU reference,
    measured in the same run rather than taken from a data sheet."""
    device = bench.device
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = 8192 if device.type == "cuda" else n
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    ts = [bench.timed(lambda: a @ b) for _ in range(repeats)]
    return 2 * n**3 / med(ts)


def encoder_gflop(variant: str, size: int) -> dict:
    """Image-encoder forward GFLOP per image, counted by torch's FlopCounterMode on the meta device
    (no compute): linear+conv only (the convention of the issue's 207 / 1620 GFLOP) and with attention."""
    from torch.utils.flop_counter import FlopCounterMode

    from sam2_train import build_sam2_model

    m = build_sam2_model(variant, image_size=size).to("meta")
    with FlopCounterMode(display=False) as fc:
        m.forward_image(torch.empty(1, 3, size, size, device="meta"))
    counts = {str(k): v for k, v in fc.get_flop_counts()["Global"].items()}
    dense = sum(v for k, v in counts.items() if ("mm" in k and "bmm" not in k) or "convolution" in k)
    return {"linear_conv": dense / 1e9, "total": fc.get_total_flops() / 1e9}


def bench_mfu_2d(
    bench: Bench, variant: str, S: int, warmup: int, repeats: int, peak_flops: float, images: int = 2
) -> dict:
    """Model FLOPs utilisation of our whole 2D training step (``images`` images, forward+backward+AdamW):
    FLOPs counted by FlopCounterMode on one real step, divided by the step time and the peak."""
    from torch.utils.flop_counter import FlopCounterMode

    from sam2_train import build_sam2_model

    device = bench.device
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose("train_2d", base_overrides(S, device.type) + [f"model={variant}"], Path(tmp))
    model = build_sam2_model(variant, image_size=S).to(device).train()
    batch = make_2d_batch(S, images)
    step = ours_2d(bench, cfg, model)
    with FlopCounterMode(display=False) as fc:
        step(batch)
    flops = fc.get_total_flops()
    t = bench.interleaved({"s": lambda: step(batch)}, warmup, repeats)["s"]
    return {
        "variant": variant,
        "image_size": S,
        "images": images,
        "step_s": med(t),
        "step_tflop": flops / 1e12,
        "achieved_tflops": flops / med(t) / 1e12,
        "peak_tflops": peak_flops / 1e12,
        "mfu": flops / med(t) / peak_flops,
        "encoder_gflop_per_image_1024": encoder_gflop(variant, 1024),
    }


def batches(bench: Bench) -> tuple[int, ...]:
    """Images per step: 2 on a CPU; on a GPU a sweep for the best batch that fits (an OOM ends the sweep
    of its model and is recorded as its row)."""
    return (2, 8, 32) if bench.gpu else (2,)


def run(bench: Bench) -> None:
    peak = matmul_peak(bench)
    rows = bench.results["mfu_2d"] = []
    S = 1024 if bench.gpu else bench.main_size
    for v in MFU_VARIANTS:
        for n in batches(bench):
            bench.log(f"MFU 2D {v} @ {S}, {n} images")
            x = bench.guarded(
                lambda v=v, n=n: bench_mfu_2d(bench, v, S, 1, 3 if bench.quick or bench.gpu else 5, peak, n),
                variant=v,
                image_size=S,
                images=n,
            )
            rows.append(x)
            bench.log(f"  mfu {x.get('mfu', x.get('oom'))}")
            bench.save()
            if "oom" in x:
                break
