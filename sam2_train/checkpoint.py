"""Strict loading of SAM2 weights: Meta's ``{"model": state_dict}`` files and our training checkpoints.

Every failure is one :class:`CheckpointError` whose message names the file and says what is wrong:
missing file, truncated/corrupt file, a pickle that needs code, another variant's weights (with the
variant the file looks like), or missing/unexpected keys (first few listed).
"""

from __future__ import annotations

from pathlib import Path

import torch

from medseg.train.checkpoint import (
    CheckpointError,
    load_state_strict,
    read_checkpoint,
    state_dict_of,
)
from medseg.train.class_prompts import attach_saved_class_prompts

# Signature of each variant: (patch-embed width, number of Hiera blocks, SAM2.1 keys present)
_SIGNATURES = {
    (96, 12, False): "sam2_hiera_t",
    (96, 16, False): "sam2_hiera_s",
    (112, 24, False): "sam2_hiera_b+",
    (144, 48, False): "sam2_hiera_l",
    (96, 12, True): "sam2.1_hiera_t",
    (96, 16, True): "sam2.1_hiera_s",
    (112, 24, True): "sam2.1_hiera_b+",
    (144, 48, True): "sam2.1_hiera_l",
}


def guess_variant(state_dict: dict) -> str | None:
    """Name the SAM2 variant a state dict belongs to, from tensor shapes and key names."""
    w = state_dict.get("image_encoder.trunk.patch_embed.proj.weight")
    if not isinstance(w, torch.Tensor):
        return None
    blocks = {int(k.split(".")[3]) for k in state_dict if k.startswith("image_encoder.trunk.blocks.")}
    is_21 = "no_obj_embed_spatial" in state_dict or "obj_ptr_tpos_proj.weight" in state_dict
    return _SIGNATURES.get((int(w.shape[0]), len(blocks), is_21))


def load_sam2_weights(model: torch.nn.Module, path: str | Path, *, variant: str | None = None) -> dict:
    """Load SAM2 weights into ``model`` with strict key matching; returns the checkpoint dict.

    Raises:
        CheckpointError: one line naming ``path`` and the problem.
    """
    obj = read_checkpoint(path)
    sd = state_dict_of(obj, path)
    attach_saved_class_prompts(model, sd)  # trained in automatic mode
    found = guess_variant(sd)
    if variant is not None and found is not None and found != variant:
        raise CheckpointError(
            f"{path}: checkpoint is for variant {found!r} but model.variant is {variant!r} "
            f"(choose model={found} or the matching checkpoint)"
        )
    looks = f"; it looks like {found!r}" if found else ""
    load_state_strict(model, sd, path, variant or "the model", hint=looks)
    return obj
