"""Section ``loader``: data loading per training step through the training path (synthetic Kvasir and
nnU-Net layouts on disk), the volume cache's speed-up, and training's pre-flight per case. Writes
``loader_time_per_step``."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from bench.harness import Bench, med
from bench.workloads import base_overrides, compose


def _batch_2d(bench: Bench, tmp: Path, ov: list[str], rng, repeats: int) -> list[float]:
    """Timings of one 2-image ``ImageBatch`` drawn through ``prepare_data``'s 2D samples and collate."""
    from medseg.run.context import prepare_data

    cfg2 = compose("train_2d", ov + [f"dataset.root={tmp / 'kvasir'}"], tmp / "run2d")
    ctx2 = prepare_data(cfg2, tmp / "run2d", mode="2d")
    n2 = len(ctx2.train_samples)
    counter2 = [0]

    def batch2d():
        idx = [(counter2[0] + k) % n2 for k in range(2)]
        counter2[0] += 2
        return ctx2.collate([ctx2.train_samples.get(j, rng) for j in idx])

    return bench.interleaved({"b": batch2d}, 1, repeats)["b"]


def _clips_3d(bench: Bench, tmp: Path, ov: list[str], rng, repeats: int) -> dict[str, list[float]]:
    """Timings of one-clip ``ClipBatch`` draws, reading the ``.nii.gz`` (plain) vs the volume cache."""
    from func_3d.task import ClipSamples, collate_clips
    from medseg.run.context import prepare_data
    from medseg.train.task_settings import TaskSettings

    draws = {}
    for name, cache in (("plain", "null"), ("cached", str(tmp / "cache"))):
        cfg3 = compose(
            "train_3d",
            ov + [f"dataset.root={tmp / 'nnunet'}", f"data_cache.dir={cache}"],
            tmp / f"run3d_{name}",
        )
        ctx3 = prepare_data(cfg3, tmp / f"run3d_{name}", mode="3d")
        clips = ClipSamples(
            ctx3.train_cases, ctx3.train_transform, cfg3.func_3d, TaskSettings.from_cfg(cfg3, "3d").prompt
        )
        for i in range(len(clips)):  # fills the cache (and the page cache for both)
            clips.get(i, rng)
        counter = [0]

        def draw(clips=clips, counter=counter):
            counter[0] += 1
            return collate_clips([clips.get(counter[0] % len(clips), rng)])

        draws[name] = draw
    return bench.interleaved(draws, 1, repeats)


def bench_preflight(tmp: Path, ov: list[str]) -> dict:
    """Training's pre-flight (every case checked, medseg.data.verify.preflight) on the 3D set: first run (reads
    and caches every volume) and second run (remembered verdicts), per case."""
    from medseg.data.datasets import build_dataset
    from medseg.data.verify import preflight

    cache = tmp / "preflight_cache"
    cfg = compose("train_3d", ov + [f"dataset.root={tmp / 'nnunet'}", f"data_cache.dir={cache}"], tmp / "pf")
    times = []
    for _ in range(2):
        ds = build_dataset(cfg.dataset)
        ds.enable_cache(cache)
        t0 = time.perf_counter()
        preflight(cfg, ds)
        times.append(time.perf_counter() - t0)
    n = len(ds.all_case_ids)
    return {
        "preflight_cases": n,
        "preflight_first_case_s": times[0] / n,
        "preflight_again_case_s": times[1] / n,
    }


def bench_loader(
    bench: Bench, S: int, repeats: int, step_2d_s: float | None, step_3d_s: float | None
) -> dict:
    from medseg.data import synthetic

    out = {"image_size": S}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        synthetic.write_kvasir(tmp / "kvasir", n=10, size=2 * S)
        synthetic.write_nnunet(tmp / "nnunet", n_cases=4, depth=96, size=2 * S, n_organs=3)
        ov = [o for o in base_overrides(S, "cpu") if not o.startswith("dataset.root")]
        rng = np.random.default_rng(0)  # one stream for both, drawn in this order
        t2 = _batch_2d(bench, tmp, ov, rng, repeats)
        t3s = _clips_3d(bench, tmp, ov, rng, repeats)
        out.update(bench_preflight(tmp, ov))
    t3 = t3s["plain"]
    out["clip_3d_cached_s"] = med(t3s["cached"])
    out["clip_3d_cache_speedup"] = med(t3s["plain"]) / med(t3s["cached"])
    out["batch_2d_s"] = med(t2)
    out["batch_2d_desc"] = (
        f"2 Kvasir-layout JPEG images ({2 * S}px) -> transform + box prompts -> ImageBatch at {S}px"
    )
    out["clip_3d_s"] = med(t3)
    out["clip_3d_desc"] = (
        f"8-slice clip from a nnU-Net .nii.gz volume (96 x {2 * S}^2, 3 organs) -> ClipBatch at {S}px"
    )
    out["step_2d_s"], out["step_3d_s"] = step_2d_s, step_3d_s
    out["batch_2d_over_step"] = out["batch_2d_s"] / step_2d_s if step_2d_s else None
    out["clip_3d_over_step"] = out["clip_3d_s"] / step_3d_s if step_3d_s else None
    out["repeats"] = repeats
    out["notes"] = (
        "main process, num_workers=0; the engine's DataLoader with workers overlaps this with the step"
    )
    return out


def run(bench: Bench) -> None:
    r, S = bench.results, bench.main_size
    bench.log(f"loader @ {S}")
    s2 = (r.get("train_step_overhead_2d") or {}).get("ours_s")
    s3 = (r.get("train_step_overhead_3d") or {}).get("ours_s")
    r["loader_time_per_step"] = bench_loader(bench, S, 5 if bench.quick else 8, s2, s3)
    bench.save()
