"""The SAM2 family (``sam2_train`` + ``func_2d`` + ``func_3d``) as a :class:`medseg.family.ModelFamily`:
Hiera activation checkpointing, Meta's variants, one image through the prompt encoder and decoder, and a
volume propagated as a video (``func_3d.volume.segment_volume``)."""

from __future__ import annotations

from typing import Any

import torch

from medseg.data.batch import ImageBatch
from medseg.family import FamilyBase
from medseg.train.prompted_image import PromptedImageParts
from sam2_train.trainable import PRESETS


class SAM2Family(FamilyBase):
    """SAM2 and SAM2.1 (every Hiera size)."""

    name = "sam2"
    presets = PRESETS

    def guess_variant(self, state_dict) -> str | None:
        from sam2_train.checkpoint import guess_variant

        return guess_variant(dict(state_dict))

    def enable_activation_checkpointing(self, model: torch.nn.Module) -> int:
        from sam2_train.activation import set_activation_checkpointing

        return set_activation_checkpointing(model, True)

    @torch.no_grad()
    def predict_image(self, model: Any, batch: ImageBatch, kind) -> torch.Tensor:
        from func_2d.sam2_image import decode_objects, encode_images

        parts = PromptedImageParts.for_inference(kind, class_prompts=hasattr(model, "class_prompts"))
        feats = encode_images(model, batch.images, add_no_mem_embed=True)
        multimask = parts.use_multimask(batch)
        low, ious, scores, _ = decode_objects(
            model, feats.image_embed, feats.high_res, batch.obj_img, **parts.prompts(batch),
            sparse_prompts=parts.sparse_prompts(model, batch), multimask_output=multimask,
        )  # fmt: skip
        return parts.outputs(low, ious, scores, batch.images.shape[-1], multimask)["best"]

    def predict_volume(self, model, images, prompts, kind, out_hw, *, threshold=0.0, options=None):
        """Propagation through the volume as a video (forward and backward from the prompted slices)."""
        from func_3d.volume import segment_volume

        o = dict(options or {})
        return segment_volume(
            model, images, prompts, kind, out_hw, threshold=threshold,
            offload=bool(o.get("offload", True)), keep_largest=bool(o.get("largest_component", False)),
            exact=bool(o.get("exact_parity", False)), progress=bool(o.get("progress", False)),
        )  # fmt: skip
