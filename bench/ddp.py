"""Per-step time of the 2D SAM2 training step under DistributedDataParallel: 1 vs 2 CPU processes (weak
scaling: batch per process fixed), and the share of the step spent on the gradient all-reduce.

    python bench/ddp.py [--size 128] [--steps 8] [--warmup 2]   -> bench/results_ddp.json + docs/BENCHMARKS_DDP.md

Each process runs one thread. The communication share is (step - step under ``no_sync``) / step: the
part of the all-reduce that the backward pass did not hide. On a GPU machine the same script with
``--device cuda`` times 1 vs N GPUs of one node (nccl).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, args, out: str) -> None:
    import contextlib

    import torch.distributed as dist

    from bench.workloads import base_overrides, compose, make_2d_batch  # imports sam2_train first
    from medseg.run.app import build_task
    from medseg.train.distributed import wrap_for_training
    from sam2_train import build_sam2_model

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    device = torch.device(args.device, rank) if args.device == "cuda" else torch.device("cpu")
    if world > 1:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    cfg = compose("train_2d", [*base_overrides(args.size, args.device), "model.checkpoint=null"], Path(out))
    torch.manual_seed(0)
    model = build_sam2_model("sam2.1_hiera_t", image_size=args.size, checkpoint=None).to(device)
    task = build_task(
        cfg, SimpleNamespace(train_samples=None, collate=None, label_names={1: "object"}), "task_2d"
    )
    batch = make_2d_batch(args.size, B=args.batch).to(device)
    step = wrap_for_training(model, task, device=device, ddp_cfg=cfg.trainer.ddp, first_batch=batch)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def one(sync: bool) -> float:
        if world > 1:
            dist.barrier()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        with step.no_sync() if (world > 1 and not sync) else contextlib.nullcontext():
            step(batch)["loss"].backward()
        if sync:
            opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    for _ in range(args.warmup):
        one(True)
    times = {"sync": [], "no_sync": []}
    for _ in range(args.steps):  # interleaved, so load from other jobs hits both alike
        times["sync"].append(one(True))
        if world > 1:
            times["no_sync"].append(one(False))
    if rank == 0:
        Path(out, f"w{world}.json").write_text(json.dumps(times), encoding="utf-8")
    if world > 1:
        dist.destroy_process_group()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--batch", type=int, default=1, help="images per process")
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--worlds", default="1,2")
    p.add_argument("--out", default=str(ROOT / "bench" / "results_ddp.json"))
    p.add_argument("--doc", default=str(ROOT / "docs" / "BENCHMARKS_DDP.md"))
    p.add_argument("--render-only", action="store_true", help="re-render --doc from --out")
    args = p.parse_args()
    if args.render_only:
        Path(args.doc).write_text(
            render(json.loads(Path(args.out).read_text(encoding="utf-8"))), encoding="utf-8"
        )
        return
    import tempfile

    rows = []
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        for world in [int(w) for w in args.worlds.split(",")]:
            torch.multiprocessing.spawn(
                _worker, args=(world, _free_port(), args, tmp), nprocs=world, join=True
            )
            t = json.loads(Path(tmp, f"w{world}.json").read_text(encoding="utf-8"))
            step = statistics.median(t["sync"])
            row = {"processes": world, "step_s": step, "images_per_s": world * args.batch / step}
            if t["no_sync"]:
                compute = statistics.median(t["no_sync"])
                row.update(no_sync_step_s=compute, comm_share=max(0.0, (step - compute) / step))
            rows.append(row)
    result = {
        "what": "2D SAM2.1 Hiera-T training step (forward + backward + SGD), DistributedDataParallel",
        "device": args.device,
        "image_size": args.size,
        "batch_per_process": args.batch,
        "threads_per_process": 1,
        "cpu_count": os.cpu_count(),
        "steps": args.steps,
        "torch": torch.__version__,
        "load_avg_1min": [load_before, os.getloadavg()[0]],  # before / after: other jobs on the machine
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2), encoding="utf-8")
    text = render(result)
    Path(args.doc).write_text(text, encoding="utf-8")
    print(text)


def render(result: dict) -> str:
    """docs/BENCHMARKS_DDP.md from a result of :func:`main`."""
    lines = [
        "# Data-parallel steps (bench/ddp.py)",
        "",
        f"{result['what']}; {result['device']}, {result['image_size']} px, batch {result['batch_per_process']} "
        f"per process, {result['threads_per_process']} thread per process, median of {result['steps']} steps "
        f"(torch {result['torch']}).",
        "",
        "| processes | step (s) | images/s | step without all-reduce (s) | all-reduce share |",
        "|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        ns = f"{r['no_sync_step_s']:.3f}" if "no_sync_step_s" in r else "–"
        share = f"{100 * r['comm_share']:.0f}%" if "comm_share" in r else "–"
        lines.append(f"| {r['processes']} | {r['step_s']:.3f} | {r['images_per_s']:.2f} | {ns} | {share} |")
    la = result.get("load_avg_1min") or [float("nan")] * 2
    lines += [
        "",
        f"Weak scaling on a {result['cpu_count']}-core machine shared with other jobs (load average "
        f"{la[0]:.1f} before, {la[1]:.1f} after): the two processes compete for cores, so this shows the "
        "wiring and its overhead, not a speed-up. The all-reduce share is (step - step under `no_sync`) / "
        "step, the part of the gradient all-reduce the backward pass did not hide; at this load it is "
        "within the noise. 1 vs N GPUs: not measured (no multi-GPU machine was lent); "
        "`python bench/ddp.py --device cuda --worlds 1,2,4,8` measures it on one node.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
