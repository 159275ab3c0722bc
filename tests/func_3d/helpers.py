"""Volumes shared by the func_3d tests (propagation engine, parity with Meta's video predictor)."""

from __future__ import annotations

import math

import torch

from medseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD

MEAN = torch.tensor(IMAGENET_MEAN)[:, None, None]
STD = torch.tensor(IMAGENET_STD)[:, None, None]


def drifting_discs(
    num_frames: int,
    size: int,
    discs: list[tuple[float, float, float]],
    *,
    drift: float,
    pulse: float = 0.0,
    seed: int = 0,
) -> torch.Tensor:
    """Discs ``(cx, cy, r)`` (fractions of ``size``) on noise, ImageNet-normalised: ``[T, 3, S, S]``.
    Frame ``t`` moves each centre right by ``drift * t`` and scales each radius by ``1 + pulse * sin(t)``."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    frames = []
    for t in range(num_frames):
        img = 0.1 * torch.rand(size, size, generator=g)
        for cx, cy, r in discs:
            rr = r * size * (1 + pulse * math.sin(t))
            img += (((xx - (cx + drift * t) * size) ** 2 + (yy - cy * size) ** 2) < rr**2).float() * 0.7
        frames.append(img)
    vol = torch.stack(frames).clamp(0, 1)[:, None].expand(-1, 3, -1, -1)
    return (vol - MEAN) / STD
