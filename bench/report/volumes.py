"""Inference and data sections of docs/BENCHMARKS.md: segment_volume vs Meta's predictor, peak memory vs
volume length, data loading per step."""

from __future__ import annotations

from bench.report.cells import fmt, verdict


def inference(r: dict) -> list[str]:
    """3D inference vs Meta's ``SAM2VideoPredictor``."""
    L: list[str] = []
    inf = r.get("inference_vs_meta") or []
    L += [
        "## 3D inference: `segment_volume` vs Meta's `SAM2VideoPredictor`",
        "",
        "Same synthetic CT volume (`medseg.data.synthetic.ct_volume`), same box per organ on its key slice (largest "
        "area), same random weights (mask decoder scaled up so masks are non-trivial), same normalised frames "
        '(the predictor\'s `inference_state["images"]` replaced). Both propagate forward then backward from the '
        "first prompted slice. Ours batches all organs and encodes every slice once; the predictor tracks organs one "
        "after another (and re-encodes slices on its reverse pass). Predictor time: prompts + both "
        "`propagate_in_video` passes + label assembly (not `init_state`'s JPEG loading); ours: the whole "
        "`segment_volume` call.",
        "",
        "| model @ px | slices | organs | key slices | ours slices/s | Meta slices/s | speedup | goal | result | min Dice vs Meta | goal | result | equal voxels |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for x in inf:
        if "oom" in x or "error" in x:
            L.append(
                f"| @ {x.get('image_size')} | {x.get('slices')} | {x.get('organs')} | "
                f"{x.get('oom') or 'error: ' + str(x.get('error'))} |" + " |" * 9
            )
            continue
        L.append(
            f"| {x['variant']} @ {x['image_size']} | {x['slices']} | {x['organs']} "
            f"| {', '.join(str(k) for k in x.get('key_slices', [])) or '—'} | {fmt(x['ours_slices_per_s'], 2)} "
            f"| {fmt(x['meta_slices_per_s'], 2)} | {fmt(x['speedup'], 2)}× | ≥ {x['goal_speedup']}× | {verdict(x['pass_speedup'])} "
            f"| {x['dice_min']:.5f} | ≥ {x['goal_dice']} | {verdict(x['pass_dice'])} | {100 * x['equal_voxels']:.4f} % |"
        )
    if not inf:
        L.append("| — | — | — | — | — | — | — | ≥ 1.5× | not measured | — | ≥ 0.999 | not measured | — |")
    for x in inf:
        if "oom" in x or "error" in x:
            L.append(
                f"| @ {x.get('image_size')} | {x.get('slices')} | {x.get('organs')} | "
                f"{x.get('oom') or 'error: ' + str(x.get('error'))} |" + " |" * 9
            )
            continue
        L.append("")
        L.append(
            f"Dice per organ ({x['organs']} organs, {x['slices']} slices): "
            + ", ".join(f"{k}: {val:.5f}" for k, val in x["dice_per_organ"].items())
            + (
                f" ({x['threads']} torch thread{'s' if x['threads'] > 1 else ''}, 1-minute load average "
                f"{x['load_avg_1min']:.1f} when the case finished)"
                if "threads" in x
                else ""
            )
        )
        if "exact_dice_min" in x:
            L.append("")
            L.append(
                f"`func_3d.exact_parity=true` (organs one by one, one-frame encoder calls) on the same case: "
                f"{fmt(x['exact_slices_per_s'], 2)} slices/s, min Dice vs Meta {x['exact_dice_min']:.5f}, "
                f"{100 * x['exact_equal_voxels']:.4f} % equal voxels."
            )
    if inf:
        L += [
            "",
            "Why batched Dice is not exactly 1: batched matmuls round differently from one-object calls (logits "
            "within 1e-4 of the predictor, tests/func_3d/test_parity_3d.py), and the memories are stored in bfloat16 as the "
            "predictor stores them, so over a long volume a 1e-6 difference can round a memory feature one bf16 step "
            "the other way and move boundary voxels. `exact_parity` follows the predictor's order and reproduces its "
            "logits and label volume bit for bit, also with organs keyed on different slices (tests/func_3d/test_parity_3d.py), "
            "at the predictor's speed. Both modes resize the low-resolution logits as the predictor does (objects as "
            "the batch): resizing them as channels of one image differs by 1 ulp, enough to flip a voxel where two "
            "organs' logits tie.",
        ]
    L.append("")
    return L


def memory(r: dict) -> list[str]:
    """Peak memory of ``segment_volume`` vs volume length."""
    L: list[str] = []
    mem = r.get("memory_vs_length") or []
    L += [
        "### Peak memory of `segment_volume` vs volume length (offload=True)",
        "",
        "Fresh process per row; peak RSS (`VmHWM`) and its rise over the RSS just before the call "
        "(model built, volume in memory).",
        "",
        "| slices | px | organs | time (s) | slices/s | peak RSS (MB) | rise during call (MB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for x in mem:
        if "error" in x:
            L.append(f"| {x.get('T')} | {x.get('size')} | — | error: {x['error']} | | | |")
        else:
            L.append(
                f"| {x['slices']} | {x['image_size']} | {x['organs']} | {fmt(x['seconds'], 2)} | "
                f"{fmt(x['slices'] / x['seconds'], 2)} | {fmt(x['peak_rss_mb'], 0)} | {fmt(x['peak_delta_mb'], 0)} |"
            )
    L.append("")
    return L


def loader(r: dict) -> list[str]:
    """Data loading per step (and the cache, and the pre-flight)."""
    L: list[str] = []
    ld = r.get("loader_time_per_step")
    L += ["## Data loading per step", ""]
    if ld:
        L += [
            "| what | time (s) | step (s) | loader ÷ step |",
            "|---|---|---|---|",
            f"| {ld['batch_2d_desc']} | {fmt(ld['batch_2d_s'], 4)} | {fmt(ld['step_2d_s'])} | {fmt(ld['batch_2d_over_step'], 3)} |",
            f"| {ld['clip_3d_desc']} | {fmt(ld['clip_3d_s'], 4)} | {fmt(ld['step_3d_s'])} | {fmt(ld['clip_3d_over_step'], 3)} |",
            "",
        ]
        if ld.get("clip_3d_cached_s") is not None:
            L += [
                f"Same clips with the volume cache (`data_cache`, memory-mapped decoded volumes): "
                f"{fmt(ld['clip_3d_cached_s'], 4)} s per clip vs {fmt(ld['clip_3d_s'], 4)} s reading the "
                f"`.nii.gz` each time: **{fmt(ld['clip_3d_cache_speedup'], 2)}×** faster (interleaved, median).",
                "",
            ]
        if ld.get("preflight_first_case_s") is not None:
            share = ld["preflight_again_case_s"] / ld["step_3d_s"] if ld.get("step_3d_s") else None
            L += [
                f"Pre-flight (every case checked before step 1, `medseg.data.verify.preflight`, "
                f"{ld['preflight_cases']} volumes): {fmt(ld['preflight_first_case_s'], 4)} s per case on the "
                f"first run (reads and caches the volume), {fmt(ld['preflight_again_case_s'], 5)} s per case "
                f"once verdicts are remembered"
                + (f" ({fmt(100 * share, 3)} % of one 3D step per case)." if share is not None else "."),
                "",
            ]
        L += [
            f"Data written by `medseg.data.synthetic.write_kvasir` / `write_nnunet`, loaded through "
            f"`medseg.run.context.prepare_data` (the training path). Steps are the ones measured above at the same "
            f"size. {ld['notes']}.",
            "",
        ]
    else:
        L += ["Not measured.", ""]
    return L
