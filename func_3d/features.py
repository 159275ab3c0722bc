"""Backbone features of a volume's slices, computed once and shared by every object.

The image encoder is the expensive part of SAM2; in a volume with O objects it runs once per slice,
and every object's tracking step reads the same features (expanded along the batch dimension).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class FrameFeatures:
    """Image-encoder outputs of T frames at the levels the SAM2 heads use.

    Attributes:
        fpn: one tensor per feature level, highest resolution first, each ``[T, C_l, H_l, W_l]``
            (``model.num_feature_levels`` levels; levels 0 and 1 are already projected by the mask
            decoder's ``conv_s0``/``conv_s1`` when the model uses high-resolution features).
        pos: the sine position encodings of the same levels, ``[1, C_l, H_l, W_l]`` (they do not
            depend on the image, so one copy serves every frame).
        feat_sizes: ``(H_l, W_l)`` of every level.
    """

    fpn: list[Tensor]
    pos: list[Tensor]
    feat_sizes: list[tuple[int, int]]

    @property
    def num_frames(self) -> int:
        return self.fpn[-1].shape[0]

    def maps(self, t: int, device: torch.device) -> list[Tensor]:
        """Feature maps of frame ``t`` on ``device``: per level ``[1, C_l, H_l, W_l]``."""
        return [x[t : t + 1].to(device, non_blocking=True) for x in self.fpn]

    def top(self, t: int, device: torch.device) -> tuple[Tensor, Tensor]:
        """Lowest-resolution features and position encoding of frame ``t``, flattened to ``[HW, 1, C]``."""
        feat = self.fpn[-1][t : t + 1].to(device, non_blocking=True)
        pos = self.pos[-1].to(device, non_blocking=True)
        return feat.flatten(2).permute(2, 0, 1), pos.flatten(2).permute(2, 0, 1)

    def maps_many(self, frames: list[int], device: torch.device) -> list[Tensor]:
        """Feature maps of several frames stacked along the batch: per level ``[B, C_l, H_l, W_l]``."""
        idx = torch.tensor(frames, device=self.fpn[0].device)
        return [x.index_select(0, idx).to(device, non_blocking=True) for x in self.fpn]

    def top_many(self, frames: list[int], device: torch.device) -> tuple[Tensor, Tensor]:
        """Lowest-resolution features of several frames ``[HW, B, C]`` and the position encoding ``[HW, 1, C]``."""
        idx = torch.tensor(frames, device=self.fpn[-1].device)
        feat = self.fpn[-1].index_select(0, idx).to(device, non_blocking=True)
        pos = self.pos[-1].to(device, non_blocking=True)
        return feat.flatten(2).permute(2, 0, 1), pos.flatten(2).permute(2, 0, 1)


def encode_frames(
    model: torch.nn.Module,
    images: Tensor,
    *,
    chunk: int = 8,
    offload: bool = False,
) -> FrameFeatures:
    """Run SAM2's image encoder on every frame, ``chunk`` frames at a time.

    Gradients flow as the caller's grad mode allows (wrap in ``torch.no_grad()`` for a frozen
    encoder; note the mask decoder's ``conv_s0``/``conv_s1`` run here too).

    Args:
        model: a ``SAM2Base``.
        images: ``[T, 3, S, S]`` ImageNet-normalised frames, ``S == model.image_size``; may live on the
            CPU while the model is on an accelerator (each chunk is moved on its own).
        chunk: frames per encoder call (memory grows with it, not with T).
        offload: keep the features on the CPU and move one frame at a time to the model's device
            when it is used, so accelerator memory stays flat in the volume length.

    Returns:
        The features of all T frames.
    """
    size = model.image_size
    if images.dim() != 4 or images.shape[1] != 3 or tuple(images.shape[-2:]) != (size, size):
        raise ValueError(
            f"images must be [T, 3, {size}, {size}] (model.image_size), got {tuple(images.shape)}"
        )
    if chunk < 1:
        raise ValueError(f"chunk={chunk} must be >= 1")
    device = model.device
    levels = model.num_feature_levels
    fpn_chunks: list[list[Tensor]] = [[] for _ in range(levels)]
    pos: list[Tensor] = []
    for start in range(0, images.shape[0], chunk):
        batch = images[start : start + chunk].to(device).float()
        out = model.forward_image(batch)
        maps = out["backbone_fpn"][-levels:]
        if not pos:
            pos = [p[:1] for p in out["vision_pos_enc"][-levels:]]
        for level, x in enumerate(maps):
            fpn_chunks[level].append(x.cpu() if offload else x)
    if offload:
        pos = [p.cpu() for p in pos]
    fpn = [torch.cat(xs) if len(xs) > 1 else xs[0] for xs in fpn_chunks]
    return FrameFeatures(fpn=fpn, pos=pos, feat_sizes=[(x.shape[-2], x.shape[-1]) for x in fpn])
