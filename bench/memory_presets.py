"""Activation memory of one training sample per Hiera size and image size, counted on the meta device.

What it measures: the bytes of the distinct storages autograd keeps for the backward pass (parameters
excluded; attention counted as a fused GPU kernel keeps it: q, k, v, output, log-sum-exp)
during our real training forward: ``SAM2VideoTask``'s propagation (``propagate_clips``, train mode) of
one 8-frame clip with O objects, and the 2D path (``encode_images`` + ``decode_objects``) of one image
with one box. The model lives on PyTorch's ``meta`` device, so nothing is computed: shapes only, any
size in seconds on a CPU. fp32 (the meta device has no autocast); bf16 autocast roughly halves it.

How ``conf/trainer/high_memory.yaml`` uses it: the batch sizes measured on an 80 GB H100 for the bare
Hiera-T model (the issue's table: 8 clips at 512 px, 4 at 1024 px) are the anchors; every other
(size, image size) gets ``floor(anchor x activation(T, 1 object) / activation(size, max_objects))``, so
a larger model or more objects per clip never gets a larger batch than the measured configuration
scaled by its exact activation ratio. This is a sizing rule, not a GPU measurement.

Usage::

    .venv/bin/python bench/memory_presets.py            # prints the table, writes bench/memory_presets.json
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import torch
from activations import saved_bytes as _saved_bytes

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS = {"t": "sam2.1_hiera_t", "s": "sam2.1_hiera_s", "b+": "sam2.1_hiera_b+", "l": "sam2.1_hiera_l"}
SIZES = (512, 1024)
ANCHOR_CLIPS = {512: 8, 1024: 4}  # measured on H100 80 GB, bare Hiera-T, 8-frame clips, bf16 (issue #9)
ANCHOR_IMAGES_2D = {1024: 16}  # Hiera-T 2D preset before this table (batch 16 at 1024 px)
FRAMES, MAX_OBJECTS = 8, 8


def clip_bytes(variant: str, size: int, objects: int, checkpointing: bool = False) -> int:
    from func_3d.prompts import FramePrompts
    from func_3d.propagate import propagate_clips
    from sam2_train import build_sam2_model, set_activation_checkpointing

    model = build_sam2_model(variant, image_size=size).train().to("meta")
    set_activation_checkpointing(model, checkpointing)
    frames = torch.empty(1, FRAMES, 3, size, size, device="meta")
    q = size / 4
    boxes = torch.tensor([[q, q, 3 * q, 3 * q]] * objects)
    prompts = [{0: FramePrompts(boxes=boxes)}]
    return _saved_bytes(
        lambda: propagate_clips(
            model,
            frames,
            prompts,
            [objects],
            both_directions=True,
            train=True,
            activation_checkpointing=checkpointing,
            return_logits=False,
            return_multimask=True,
        ),
        model,
    )


def image_bytes(variant: str, size: int) -> int:
    from func_2d.sam2_image import decode_objects, encode_images
    from sam2_train import build_sam2_model

    model = build_sam2_model(variant, image_size=size).train().to("meta")
    images = torch.empty(1, 3, size, size, device="meta")
    q = size / 4
    boxes = torch.tensor([[q, q, 3 * q, 3 * q]], device="meta")

    def run():
        feats = encode_images(model, images, add_no_mem_embed=True)
        decode_objects(
            model,
            feats.image_embed,
            feats.high_res,
            torch.zeros(1, dtype=torch.long, device="meta"),
            boxes=boxes,
        )

    return _saved_bytes(run, model)


def main() -> int:
    rows = {}
    for key, variant in VARIANTS.items():
        for size in SIZES:
            rows[f"{key}@{size}"] = {
                "clip_1obj_gb": clip_bytes(variant, size, 1) / 2**30,
                f"clip_{MAX_OBJECTS}obj_gb": clip_bytes(variant, size, MAX_OBJECTS) / 2**30,
                "image_gb": image_bytes(variant, size) / 2**30,
            }
            if key == "l" and size == 1024:
                rows[f"{key}@{size}"]["clip_1obj_checkpointed_gb"] = (
                    clip_bytes(variant, size, 1, True) / 2**30
                )
            print(key, size, rows[f"{key}@{size}"], flush=True)
    presets = {"3d": {}, "2d": {}}
    ref2d = rows["t@1024"]["image_gb"]
    for key in VARIANTS:
        for size in SIZES:
            ref = rows[f"t@{size}"]["clip_1obj_gb"]
            need = rows[f"{key}@{size}"][f"clip_{MAX_OBJECTS}obj_gb"]
            presets["3d"][f"{key}@{size}"] = max(1, math.floor(ANCHOR_CLIPS[size] * ref / need))
            need2d = rows[f"{key}@{size}"]["image_gb"]
            presets["2d"][f"{key}@{size}"] = max(1, math.floor(ANCHOR_IMAGES_2D[1024] * ref2d / need2d))
    out = {
        "frames": FRAMES,
        "max_objects": MAX_OBJECTS,
        "anchors_3d_clips_hiera_t": ANCHOR_CLIPS,
        "anchor_2d_images_hiera_t": ANCHOR_IMAGES_2D,
        "rows": rows,
        "presets": presets,
    }
    (ROOT / "bench" / "memory_presets.json").write_text(json.dumps(out, indent=2), encoding="utf-8")
    print(json.dumps(presets, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
