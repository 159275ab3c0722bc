"""Activation checkpointing of a SAM / MedSAM ViT image encoder (``trainer.activation_checkpointing``).

Each ``segment_anything`` ViT block (``ImageEncoderViT.blocks``) is switched to :class:`CheckpointedViTBlock`:
while gradients are recorded only the block's input is kept and its inside is recomputed in the backward
pass (``torch.utils.checkpoint``, non-reentrant). Parameters and state-dict keys do not change, so
checkpoints load either way (the same scheme as :mod:`sam2_train.activation` for SAM2's Hiera blocks).
"""

from __future__ import annotations

import torch
from segment_anything.modeling.image_encoder import Block
from torch.utils.checkpoint import checkpoint


class CheckpointedViTBlock(Block):
    """A ViT block that recomputes its inside in the backward pass (same parameters, same keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return checkpoint(super().forward, x, use_reentrant=False)
        return super().forward(x)


def vit_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The ViT blocks of a SAM model's image encoder (empty if it has none)."""
    return [b for b in getattr(getattr(model, "image_encoder", None), "blocks", []) if isinstance(b, Block)]


def set_activation_checkpointing(model: torch.nn.Module, enabled: bool) -> int:
    """Turn checkpointing of every image-encoder block on or off; returns how many blocks it covers."""
    blocks = vit_blocks(model)
    for blk in blocks:
        blk.__class__ = CheckpointedViTBlock if enabled else Block
    return len(blocks)
