"""Strict loading of SAM / MedSAM weights: Meta's and MedSAM's raw state dicts and our checkpoints.

Files are read by :func:`medseg.train.checkpoint.read_checkpoint` (``weights_only=True``; one
:class:`~medseg.train.checkpoint.CheckpointError` line naming the file for a missing, empty, truncated or
code-carrying file). Here: the variant check (a ViT-L file into ViT-B is refused, naming the file and the
variant it holds), grid interpolation to the model's image size, then key and shape checks before
``load_state_dict(strict=True)``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from medseg.train.checkpoint import CheckpointError, load_state_strict, read_checkpoint, state_dict_of
from medseg.train.class_prompts import attach_saved_class_prompts

# image-encoder width -> variant (MedSAM is a ViT-B)
_WIDTHS = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


def guess_variant(state_dict: dict) -> str | None:
    """``vit_b`` | ``vit_l`` | ``vit_h`` from the patch-embedding width, or None if not a SAM state dict."""
    w = state_dict.get("image_encoder.patch_embed.proj.weight")
    return _WIDTHS.get(int(w.shape[0])) if isinstance(w, torch.Tensor) and w.ndim == 4 else None


def load_sam_weights(model: torch.nn.Module, path: str | Path, *, variant: str | None = None) -> dict:
    """Load a SAM-family file into ``model`` (a :class:`sam_family.model.SamNet`) strictly.

    Returns:
        the checkpoint object read from ``path``.

    Raises:
        CheckpointError: one line naming ``path`` and the problem.
    """
    from sam_family.build import adapt_state_dict

    obj = read_checkpoint(path)
    sd = state_dict_of(obj, path)
    found = guess_variant(sd)
    if variant is not None and found is not None and found != variant:
        raise CheckpointError(
            f"{path}: checkpoint is for SAM {found!r} but model.variant is {variant!r} "
            f"(choose model=sam_{found} or the matching checkpoint)"
        )
    sd = adapt_state_dict(sd, model)
    attach_saved_class_prompts(model, sd)  # automatic mode's learned tokens
    looks = found or (
        "a SAM2 model (model=sam2.1_hiera_*)" if "image_encoder.trunk.patch_embed.proj.weight" in sd else None
    )
    load_state_strict(
        model, sd, path, f"SAM {variant or 'model'}", hint=f"; it looks like {looks!r}" if looks else ""
    )
    return obj
