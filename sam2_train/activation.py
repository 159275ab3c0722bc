"""Activation checkpointing of SAM2's image encoder (``trainer.activation_checkpointing``).

Each Hiera block is switched to :class:`CheckpointedBlock` so that, while gradients are recorded, only the block's input
is kept and its inside is recomputed in the backward pass (``torch.utils.checkpoint``, non-reentrant,
RNG state preserved, so drop-path draws the same values twice). The parameters and the state dict do
not change, so checkpoints load either way. The memory attention, SAM heads and memory encoder of the
3D propagation are checkpointed by :func:`func_3d.propagate.propagate` (its own flag).
"""

from __future__ import annotations

import torch
from sam2.modeling.backbones.hieradet import MultiScaleBlock
from torch.utils.checkpoint import checkpoint


class CheckpointedBlock(MultiScaleBlock):
    """A Hiera block that recomputes its inside in the backward pass (same parameters, same keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            return checkpoint(super().forward, x, use_reentrant=False)
        return super().forward(x)


def encoder_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The Hiera blocks of a SAM2 model's image encoder (empty if it has none)."""
    trunk = getattr(getattr(model, "image_encoder", None), "trunk", None)
    return list(getattr(trunk, "blocks", []))


def set_activation_checkpointing(model: torch.nn.Module, enabled: bool) -> int:
    """Turn checkpointing of every image-encoder block on or off; returns how many blocks it covers."""
    blocks = encoder_blocks(model)
    for blk in blocks:
        if isinstance(blk, MultiScaleBlock):
            blk.__class__ = CheckpointedBlock if enabled else MultiScaleBlock
    return len(blocks)
