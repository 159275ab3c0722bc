"""Section ``memory``: peak RSS of ``segment_volume`` (offload=True) against the volume length, one fresh
process per row (the ``mem_3d`` child). Writes ``memory_vs_length``."""

from __future__ import annotations

from bench.harness import Bench, peak_rss_mb, rss_mb, run_child
from bench.workloads import VARIANT, ct_case, key_slice_prompts, sensitive_weights

LENGTHS = (16, 32, 64)


def child(bench: Bench, spec: dict) -> dict:
    """In the child process: one ``segment_volume`` call on a ``spec["T"]``-slice synthetic CT."""
    import torch

    from func_3d.volume import segment_volume
    from sam2_train import build_sam2_model

    torch.manual_seed(0)
    S, T = int(spec["size"]), int(spec["T"])
    model = build_sam2_model(VARIANT, image_size=S).to(bench.device).eval()
    sensitive_weights(model)
    images, lab = ct_case(T, S, int(spec["organs"]))
    ids, vp = key_slice_prompts(lab)
    rss0 = rss_mb()
    t = bench.timed(lambda: segment_volume(model, images, vp, "box", (S, S), offload=True))
    return {
        "slices": T,
        "image_size": S,
        "organs": len(ids),
        "seconds": t,
        "peak_rss_mb": peak_rss_mb(),
        "rss_before_mb": rss0,
        "peak_delta_mb": peak_rss_mb() - rss0,
    }


def run(bench: Bench) -> None:
    bench.results["memory_vs_length"] = rows = []
    for T in LENGTHS:
        bench.log(f"memory vs length T={T}")
        spec = {"kind": "mem_3d", "T": T, "size": 64, "organs": 3}
        rows.append(run_child({**spec, "threads": bench.threads, "device": str(bench.device)}))
        bench.save()
