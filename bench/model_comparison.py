"""docs/MODEL_COMPARISON.md: one row per model variant, counted or measured, never estimated.

Columns: parameters and image-encoder blocks (of the built model), image-encoder GFLOP at 512 and 1024
px (``torch.utils.flop_counter`` on the meta device: 2 FLOP per multiply-add, one image), activation
memory kept for the backward pass of one image with one box and of one 8-frame clip with one object
(counted on the meta device by ``bench/activations.py``, fp32, attention as a fused kernel keeps it),
the CPU time of one 2D training step here (forward + backward, one image, one box, at CPU_SIZE px: the
1024-px step of the large models takes minutes on this machine), and the GPU columns, which are filled
only from ``bench/model_comparison_gpu.json`` written by ``--gpu`` on a CUDA machine.

    .venv/bin/python bench/model_comparison.py          # counts + CPU times -> bench/model_comparison.json, the .md
    .venv/bin/python bench/model_comparison.py --gpu    # on a GPU machine: measured step time / peak memory
    .venv/bin/python bench/model_comparison.py --render # only rewrite the .md from the JSON files
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
from activations import saved_bytes
from memory_presets import clip_bytes, image_bytes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT_JSON = ROOT / "bench" / "model_comparison.json"
GPU_JSON = ROOT / "bench" / "model_comparison_gpu.json"
DOC = ROOT / "docs" / "MODEL_COMPARISON.md"
SIZES = (512, 1024)
CPU_SIZE = 128
GPU_SIZE = 1024

# (row name = conf/model file, family, variant, native image size)
SAM2_ROWS = [(f"sam2{v}_hiera_{s}", "sam2", f"sam2{v}_hiera_{s}", 1024) for v in ("", ".1") for s in "tsbl"]
SAM2_ROWS = [(n.replace("_b", "_b+"), f, v.replace("_b", "_b+"), s) for n, f, v, s in SAM2_ROWS]
SAM2_ROWS.append(("medsam2", "sam2", "sam2.1_hiera_t", 512))
SAM_ROWS = [(f"sam_vit_{v}", "sam", f"vit_{v}", 1024) for v in "blh"] + [
    ("medsam_vit_b", "sam", "vit_b", 1024)
]


def rows_to_run() -> list[tuple[str, str, str, int]]:
    """SAM2 variants always; the SAM / MedSAM ViT rows when ``segment_anything`` is installed."""
    have_sam = importlib.util.find_spec("segment_anything") is not None
    if have_sam:
        try:  # a copy without torchvision (the GPU machine, tools/gpu_check.py) cannot build them
            import segment_anything  # noqa: F401
        except ImportError:
            have_sam = False
    return SAM2_ROWS + (SAM_ROWS if have_sam else [])


# ------------------------------------------------------------------------------------------ models
def build(family: str, variant: str, size: int, device: str = "meta") -> torch.nn.Module:
    """A randomly initialised model; on ``meta`` nothing is allocated (shapes only)."""
    if family == "sam2":
        from sam2_train import build_sam2_model

        return build_sam2_model(variant, image_size=size).train().to(device)
    from sam_family.build import build_sam_net

    with torch.device("meta"):
        net = build_sam_net(variant, size)
    if device != "meta":  # random values are enough for timing; skips minutes of ViT-H init
        net = net.to_empty(device=device)
        with torch.no_grad():
            for p in net.parameters():
                p.normal_(0, 0.02)
            for b in net.buffers():
                b.zero_()
    return net.train()


def n_blocks(model, family: str) -> int:
    enc = model.image_encoder
    return len(enc.trunk.blocks) if family == "sam2" else len(enc.blocks)


def encoder_gflop(family: str, variant: str, size: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    model = build(family, variant, size)
    x = torch.empty(1, 3, size, size, device="meta")
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model.image_encoder(x)
    return fc.get_total_flops() / 1e9


def sam_step(model, size: int, device: str):
    """SAM (v1) forward for one image with one box, through segment_anything's modules."""
    x = torch.empty(1, 3, size, size, device=device)
    if device != "meta":
        x.normal_()
    q = size / 4
    box = torch.tensor([[q, q, 3 * q, 3 * q]], device=device)
    emb = model.image_encoder(x)
    sparse, dense = model.prompt_encoder(points=None, boxes=box, masks=None)
    low, iou = model.mask_decoder(
        image_embeddings=emb,
        image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )
    return low.float().mean() + iou.float().mean()


def sam2_step(model, size: int, device: str):
    from func_2d.sam2_image import decode_objects, encode_images

    x = torch.randn(1, 3, size, size, device=device)
    q = size / 4
    feats = encode_images(model, x, add_no_mem_embed=True)
    low_res, ious, _, _ = decode_objects(
        model,
        feats.image_embed,
        feats.high_res,
        torch.zeros(1, dtype=torch.long, device=device),
        boxes=torch.tensor([[q, q, 3 * q, 3 * q]], device=device),
    )
    return low_res.mean() + ious.mean()


def image_activation_gb(family: str, variant: str, size: int) -> float:
    if family == "sam2":
        return image_bytes(variant, size) / 2**30
    model = build(family, variant, size)
    return saved_bytes(lambda: sam_step(model, size, "meta"), model) / 2**30


def step_seconds(family: str, variant: str, size: int, device: str, reps: int = 3) -> dict:
    """Median seconds of a 2D training step (forward, backward, zeroed grads) and, on CUDA, peak GB."""
    model = build(family, variant, size, device=device)
    step = sam2_step if family == "sam2" else sam_step

    def once():
        loss = step(model, size, device)
        loss.backward()
        model.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()

    once()  # warm-up
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, cpu = [], []
    for _ in range(reps):
        t, c = time.perf_counter(), time.process_time()
        once()
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    # process time: the CPU-seconds this process used, which busy neighbours on shared cores barely change
    out = {"step_s": statistics.median(times), "cpu_s": statistics.median(cpu), "size": size}
    if device == "cuda":
        out["peak_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


# ------------------------------------------------------------------------------------------ runs
def cpu_row(family: str, variant: str) -> dict:
    r = step_seconds(family, variant, CPU_SIZE, "cpu", reps=3)
    r["load_1min"] = os.getloadavg()[0]
    return r


def remeasure_cpu() -> dict:
    """Only the CPU columns again (the counted columns are kept)."""
    counted = json.loads(OUT_JSON.read_text(encoding="utf-8"))
    torch.set_num_threads(1)
    for name, family, variant, _ in rows_to_run():
        counted["rows"][name]["cpu"] = cpu_row(family, variant)
        print(name, counted["rows"][name]["cpu"], flush=True)
    counted["machine"] = _machine()
    return counted


def _machine() -> str:
    return f"{platform.machine()}, {torch.get_num_threads()} thread(s), torch {torch.__version__}"


def count_all() -> dict:
    torch.set_num_threads(1)
    rows = {}
    for name, family, variant, native in rows_to_run():
        t0 = time.time()
        r = {"family": family, "variant": variant, "native_size": native}
        model = build(family, variant, native)
        r["params_M"] = sum(p.numel() for p in model.parameters()) / 1e6
        r["blocks"] = n_blocks(model, family)
        del model
        for s in SIZES:
            r[f"gflop_{s}"] = encoder_gflop(family, variant, s)
            r[f"image_gb_{s}"] = image_activation_gb(family, variant, s)
            r[f"clip_gb_{s}"] = clip_bytes(variant, s, 1) / 2**30 if family == "sam2" else None
        r["cpu"] = cpu_row(family, variant)
        rows[name] = r
        print(f"{name}: {r} ({time.time() - t0:.0f} s)", flush=True)
    return {
        "machine": _machine(),
        "rows": rows,
    }


def measure_gpu() -> dict:
    if not torch.cuda.is_available():
        raise SystemExit("error: --gpu needs a CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = True
    rows = {}
    for name, family, variant, _ in rows_to_run():
        try:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                rows[name] = step_seconds(family, variant, GPU_SIZE, "cuda", reps=5)
        except torch.cuda.OutOfMemoryError:  # a recorded result; the other rows go on
            total = torch.cuda.get_device_properties(0).total_memory / 2**30
            rows[name] = {"oom": f"OOM at {total:.0f} GB"}
        print(name, rows[name], flush=True)
        torch.cuda.empty_cache()
    return {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "dtype": "bf16 autocast",
        "rows": rows,
    }


# ------------------------------------------------------------------------------------------ render
def _f(v, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def render(counted: dict, gpu: dict | None) -> str:
    g = (gpu or {}).get("rows", {})
    lines = [
        "# Model comparison",
        "",
        "Generated by `bench/model_comparison.py` (do not edit by hand). Every number is counted or measured;",
        "nothing is estimated. Random weights (weights do not change any column).",
        "",
        "- **Params / blocks**: all parameters of the model; blocks of its image encoder (Hiera or ViT).",
        "- **GFLOP**: image encoder (SAM2: Hiera trunk + FPN neck), one image, counted with",
        "  `torch.utils.flop_counter` on the meta device (2 FLOP per multiply-add).",
        "- **Act. image / clip**: activation memory kept for the backward pass (fp32; attention as a fused GPU",
        "  kernel keeps it), counted on the meta device: one image with one box through encoder and decoder;",
        "  one 8-frame clip with one object through our propagation (SAM2 only; SAM has no memory).",
        "- **CPU time / step**: median of 3 training steps after a warm-up (forward + backward, one image, one",
        f"  box) at {CPU_SIZE} px on one thread ({counted.get('machine', '?')}), as CPU-seconds used by the",
        "  process (`time.process_time`): the cores here are shared with other jobs, which change the **wall",
        "  time** column (1-minute load average beside it) far more than the CPU time. 1024 px takes minutes here.",
        f"- **GPU step / peak**: measured at {GPU_SIZE} px by `--gpu` "
        + (
            f"on {gpu['device']} ({gpu['dtype']})"
            if gpu
            else "— not measured: no GPU lent (empty, never estimated)"
        )
        + ".",
        "",
        "| Model | Params (M) | Blocks | GFLOP 512 | GFLOP 1024 | Act. image 512 (GB) | Act. image 1024 (GB) "
        f"| Act. 8-frame clip 512 (GB) | Act. 8-frame clip 1024 (GB) | CPU time / step {CPU_SIZE} px (s) "
        f"| Wall time / step {CPU_SIZE} px (s) "
        f"| GPU step {GPU_SIZE} px (ms) | GPU peak {GPU_SIZE} px (GB) |",
        "|" + "---|" * 13,
    ]
    for name, r in counted["rows"].items():
        gr = g.get(name, {})
        cells = [
            f"`{name}`"
            + (
                f" ({r['variant']}, native {r['native_size']} px)"
                if name in ("medsam2", "medsam_vit_b")
                else ""
            ),
            _f(r["params_M"], ".1f"),
            str(r["blocks"]),
            _f(r["gflop_512"], ".1f"),
            _f(r["gflop_1024"], ".1f"),
            _f(r["image_gb_512"], ".2f"),
            _f(r["image_gb_1024"], ".2f"),
            _f(r["clip_gb_512"], ".2f"),
            _f(r["clip_gb_1024"], ".2f"),
            _f(r["cpu"].get("cpu_s"), ".2f"),
            _f(r["cpu"]["step_s"], ".2f")
            + (f" (load {r['cpu']['load_1min']:.0f})" if "load_1min" in r["cpu"] else ""),
            gr.get("oom") or _f(gr.get("step_s") and gr["step_s"] * 1000, ".0f"),
            gr.get("oom") or _f(gr.get("peak_gb"), ".1f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    if not any(r["family"] == "sam" for r in counted["rows"].values()):
        lines += ["", "SAM / MedSAM ViT rows appear when `segment_anything` is installed."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--gpu", action="store_true", help="measure the GPU columns (CUDA) into model_comparison_gpu.json"
    )
    p.add_argument(
        "--gpu-out",
        default=None,
        help="with --gpu: write the JSON here and the page beside it (tools/gpu_check.py), not into the repo",
    )
    p.add_argument("--cpu", action="store_true", help="re-measure only the CPU columns (counts kept)")
    p.add_argument(
        "--render", action="store_true", help="only rewrite docs/MODEL_COMPARISON.md from the JSON files"
    )
    args = p.parse_args(argv)
    if args.gpu and args.gpu_out:
        out = Path(args.gpu_out)
        gpu = measure_gpu()
        out.write_text(json.dumps(gpu, indent=1), encoding="utf-8")
        page = out.with_name("MODEL_COMPARISON_gpu.md")
        page.write_text(render(json.loads(OUT_JSON.read_text(encoding="utf-8")), gpu), encoding="utf-8")
        print(page)
        return 0
    if args.gpu:
        GPU_JSON.write_text(json.dumps(measure_gpu(), indent=1), encoding="utf-8")
    elif args.cpu:
        OUT_JSON.write_text(json.dumps(remeasure_cpu(), indent=1), encoding="utf-8")
    elif not args.render:
        OUT_JSON.write_text(json.dumps(count_all(), indent=1), encoding="utf-8")
    counted = json.loads(OUT_JSON.read_text(encoding="utf-8"))
    gpu = json.loads(GPU_JSON.read_text(encoding="utf-8")) if GPU_JSON.exists() else None
    DOC.write_text(render(counted, gpu), encoding="utf-8")
    print(DOC)
    return 0


if __name__ == "__main__":
    sys.exit(main())
