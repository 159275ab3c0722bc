"""The SAM / MedSAM family as a :class:`medseg.family.ModelFamily`: ViT activation checkpointing, variants
from the patch-embedding width, Meta's 1024 px positions interpolated to the model's size, and images
through :class:`sam_family.model.SamNet`; volumes are segmented slice by slice (the default of
:class:`medseg.family.FamilyBase`)."""

from __future__ import annotations

from typing import Any

import torch

from medseg.data.batch import ImageBatch
from medseg.family import FamilyBase
from medseg.train.prompted_image import PromptedImageParts
from sam_family.model import PRESETS


def sam_forward(model, batch: ImageBatch, parts: PromptedImageParts) -> dict:
    """Per-object outputs of a :class:`~sam_family.model.SamNet`: logits [N,M,S,S], ious [N,M], best [N,S,S]."""
    embed = model.encode(batch.images)
    multimask = parts.use_multimask(batch)
    low, ious = model.decode(
        embed, batch.obj_img, **parts.prompts(batch), sparse_prompts=parts.sparse_prompts(model, batch),
        multimask_output=multimask,
    )  # fmt: skip
    return parts.outputs(low, ious, None, batch.images.shape[-1], multimask)


class SamFamily(FamilyBase):
    """SAM ViT-B/L/H and MedSAM (a ViT-B)."""

    name = "sam"
    presets = PRESETS

    def guess_variant(self, state_dict) -> str | None:
        from sam_family.checkpoint import guess_variant

        return guess_variant(dict(state_dict))

    def adapt_state_dict(self, state_dict: dict, model: torch.nn.Module) -> dict:
        from sam_family.build import adapt_state_dict

        return adapt_state_dict(state_dict, model)

    def enable_activation_checkpointing(self, model: torch.nn.Module) -> int:
        from sam_family.activation import set_activation_checkpointing

        return set_activation_checkpointing(model, True)

    @torch.no_grad()
    def predict_image(self, model: Any, batch: ImageBatch, kind) -> torch.Tensor:
        parts = PromptedImageParts.for_inference(kind, class_prompts=hasattr(model, "class_prompts"))
        return sam_forward(model, batch, parts)["best"]
