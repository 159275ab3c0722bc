"""Which parts of SAM2 train: the preset table (the mechanics are shared: :mod:`medseg.train.params`)."""

from __future__ import annotations

import torch

from medseg.train.params import apply_trainable as _apply

# SAM2's memory encoder/attention, object pointers and the no-memory / no-object embeddings
_MEMORY_AND_POINTERS = ["memory_*", "maskmem_*", "obj_ptr*", "no_mem*", "no_obj*", "mask_downsample.*"]

# preset -> parameter-name patterns that stay trainable (everything else is frozen)
PRESETS: dict[str, list[str]] = {
    "full": ["*"],
    "decoder_only": ["sam_mask_decoder.*"],
    "frozen_image_encoder": ["sam_prompt_encoder.*", "sam_mask_decoder.*", *_MEMORY_AND_POINTERS],
    "frozen_prompt_encoder": ["image_encoder.*", "sam_mask_decoder.*", *_MEMORY_AND_POINTERS],
    # Medical-SAM2's 3D training: image and prompt encoders frozen; only the mask decoder and the memory
    # attention / memory encoder are in its optimisers (conf/optim/medical_sam2_adam.yaml)
    "medical_sam2_3d": ["sam_mask_decoder.*", "memory_attention.*", "memory_encoder.*"],
    "memory_only": [
        "memory_attention.*",
        "memory_encoder.*",
        "maskmem_tpos_enc",
        "obj_ptr*",
        "no_mem*",
        "no_obj*",
    ],
}


def apply_trainable(
    model: torch.nn.Module, trainable: str | list[str], presets: dict[str, list[str]] | None = None
) -> None:
    """:func:`medseg.train.params.apply_trainable` with SAM2's :data:`PRESETS` by default."""
    _apply(model, trainable, PRESETS if presets is None else presets)
