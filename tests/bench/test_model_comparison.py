"""bench/model_comparison.py: counted columns, GPU columns only from a measured file (never estimated)."""

from __future__ import annotations

import importlib.util
import sys

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))
spec = importlib.util.spec_from_file_location("model_comparison", ROOT / "bench" / "model_comparison.py")
mc = sys.modules["model_comparison"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mc)

ROW = {
    "family": "sam2", "variant": "sam2.1_hiera_t", "native_size": 1024, "params_M": 38.9, "blocks": 12,
    "gflop_512": 62.4, "gflop_1024": 290.8, "image_gb_512": 0.59, "image_gb_1024": 2.25,
    "clip_gb_512": 6.5, "clip_gb_1024": 25.4, "cpu": {"step_s": 1.6, "size": 128, "load_1min": 3.0},
}  # fmt: skip


def _cells(md: str, name: str) -> list[str]:
    line = next(ln for ln in md.splitlines() if ln.startswith(f"| `{name}`"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_gpu_columns_are_empty_without_a_measured_run():
    md = mc.render({"machine": "cpu", "rows": {"sam2.1_hiera_t": ROW}}, None)
    cells = _cells(md, "sam2.1_hiera_t")
    assert cells[-2:] == ["–", "–"] and "never estimated" in md
    assert cells[1:4] == ["38.9", "12", "62.4"]


def test_gpu_columns_come_from_the_measured_file():
    gpu = {
        "device": "NVIDIA H100",
        "dtype": "bf16 autocast",
        "rows": {"sam2.1_hiera_t": {"step_s": 0.0421, "peak_gb": 3.14}},
    }
    cells = _cells(mc.render({"rows": {"sam2.1_hiera_t": ROW}}, gpu), "sam2.1_hiera_t")
    assert cells[-2:] == ["42", "3.1"]


def test_every_variant_has_a_row_and_vit_rows_follow_segment_anything():
    names = [r[0] for r in mc.rows_to_run()]
    for v in ("", ".1"):
        for s in ("t", "s", "b+", "l"):
            assert f"sam2{v}_hiera_{s}" in names
    assert "medsam2" in names
    have_sam = importlib.util.find_spec("segment_anything") is not None
    assert ("sam_vit_b" in names) == have_sam


def test_encoder_flops_are_counted_and_grow_with_the_image():
    small, big = (
        mc.encoder_gflop("sam2", "sam2.1_hiera_t", 256),
        mc.encoder_gflop("sam2", "sam2.1_hiera_t", 512),
    )
    assert small > 0 and 3.5 < big / small < 6  # 4x the pixels, plus the global-attention blocks


def test_an_out_of_memory_row_is_recorded_and_the_next_rows_go_on(monkeypatch):
    """--gpu: one model that does not fit used to end the run; now its row reads "OOM at N GB"."""
    import contextlib

    import torch

    rows = [("big", "sam2", "sam2.1_hiera_l", 1024), ("small", "sam2", "sam2.1_hiera_t", 1024)]
    monkeypatch.setattr(mc, "rows_to_run", lambda: rows)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch, "autocast", lambda *a, **k: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "fake GPU")
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda *a: type("P", (), {"total_memory": 80 * 2**30})
    )

    def step(family, variant, size, device, reps):
        if variant.endswith("_l"):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        return {"step_s": 0.05, "peak_gb": 2.0}

    monkeypatch.setattr(mc, "step_seconds", step)
    gpu = mc.measure_gpu()
    assert gpu["rows"] == {"big": {"oom": "OOM at 80 GB"}, "small": {"step_s": 0.05, "peak_gb": 2.0}}
    cells = _cells(mc.render({"rows": {"big": ROW}}, gpu), "big")
    assert cells[-2:] == ["OOM at 80 GB", "OOM at 80 GB"]
