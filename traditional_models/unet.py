"""Reference U-Net (``monai.networks.nets.UNet``), semantic output with per-object channel selection."""

from __future__ import annotations

import torch
from monai.networks.nets import UNet as MonaiUNet

from medseg.train.segmenter import SemanticSegmenter

__all__ = ["UNet"]


class UNet(SemanticSegmenter):
    """2D MONAI U-Net with ``num_classes`` sigmoid output channels.

    Args:
        num_classes: number of foreground classes (label id ``k`` -> channel ``k - 1``).
        channels: feature channels per level.
        strides: downsampling strides between levels (``len(channels) - 1`` values); the input size must
            be divisible by their product.
        num_res_units: residual units per block.
        norm: MONAI norm name (``"batch"``, ``"instance"``).
        dropout: dropout probability.
        image_size: nominal input size (informative).
    """

    def __init__(
        self,
        *,
        num_classes: int = 1,
        channels: tuple[int, ...] | list[int] = (32, 64, 128, 256, 512),
        strides: tuple[int, ...] | list[int] = (2, 2, 2, 2),
        num_res_units: int = 2,
        norm: str = "batch",
        dropout: float = 0.0,
        image_size: int = 512,
    ) -> None:
        super().__init__(num_classes)
        channels, strides = [int(c) for c in channels], [int(s) for s in strides]
        if len(channels) < 2 or len(strides) != len(channels) - 1:
            raise ValueError(
                f"need len(strides) == len(channels) - 1, got channels={channels}, strides={strides}"
            )
        self.image_size = int(image_size)
        self.divisor = 1
        for s in strides:
            self.divisor *= s
        self.net = MonaiUNet(
            spatial_dims=2,
            in_channels=3,
            out_channels=self.num_classes,
            channels=channels,
            strides=strides,
            num_res_units=int(num_res_units),
            norm=norm,
            dropout=float(dropout),
        )

    def forward_semantic(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` -> ``[B, num_classes, S, S]`` logits."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
        if images.shape[-1] % self.divisor or images.shape[-2] % self.divisor:
            raise ValueError(f"image size {tuple(images.shape[-2:])} must be divisible by {self.divisor}")
        return self.net(images)
