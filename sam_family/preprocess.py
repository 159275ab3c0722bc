"""How an image reaches a SAM-family image encoder: the model's own normalisation, chosen by config.

The data layer hands every model ImageNet-normalised images (``medseg.data.transforms``); the geometry
(``model.preprocess.resize``: ``longest_side`` + zero padding for SAM, ``square`` for MedSAM) is applied
there, because labels and prompts must follow it. What differs per model is only the intensity mapping,
done here as a module inside the model (``model.preprocess.normalize``, a ``_target_``):

- :class:`MeanStd`: SAM's ``(x - pixel_mean) / pixel_std`` on 0-255 RGB (``SamPredictor``). SAM's
  statistics are ImageNet's times 255, so zero padding stays zero.
- :class:`MinMax`: MedSAM's per-image min-max to [0, 1] over all channels, no mean/std.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from medseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD


class _FromImageNet(nn.Module):
    """Base: undoes the data layer's ImageNet normalisation, giving RGB in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("in_mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def rgb01(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
        return images * self.in_std + self.in_mean


class MeanStd(_FromImageNet):
    """``[B,3,S,S]`` ImageNet-normalised -> ``(rgb01 * scale - mean) / std`` (SAM: scale 255).

    Args:
        mean, std: per-channel statistics in the units of ``rgb01 * scale``.
        scale: 255 for statistics given on 0-255 RGB.
    """

    def __init__(self, *, mean: Sequence[float], std: Sequence[float], scale: float = 255.0) -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(float(s) for s in std) <= 0:
            raise ValueError(
                f"model.preprocess.normalize: need 3 means and 3 positive stds, got {mean}, {std}"
            )
        self.scale = float(scale)
        self.register_buffer(
            "mean", torch.tensor([float(m) for m in mean]).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer("std", torch.tensor([float(s) for s in std]).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (self.rgb01(images) * self.scale - self.mean) / self.std


class MinMax(_FromImageNet):
    """``[B,3,S,S]`` ImageNet-normalised -> each image min-max scaled to [0, 1] (MedSAM; constant -> 0)."""

    def __init__(self, *, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = float(eps)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.rgb01(images)
        flat = x.flatten(1)
        lo = flat.min(1).values.view(-1, 1, 1, 1)
        hi = flat.max(1).values.view(-1, 1, 1, 1)
        return (x - lo) / (hi - lo).clamp_min(self.eps)
