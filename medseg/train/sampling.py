"""The training data order: a seeded permutation per epoch cut into global batches, and samples that are
a pure function of ``(seed, epoch, index)``, so data is identical under any number of workers, processes
or resumes (a mid-epoch resume skips the batches already done)."""

from __future__ import annotations

import numpy as np
import torch


class SeededSamples(torch.utils.data.Dataset):
    """Map ``(epoch, index)`` to a sample drawn with its own RNG, so data is identical whatever the
    number of workers, processes or resumes."""

    def __init__(self, source, seed: int):
        self.source, self.seed = source, int(seed)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, key):
        epoch, i = key
        rng = np.random.default_rng([self.seed, int(epoch), int(i)])
        return self.source.get(int(i), rng)


def epoch_batches(
    n: int, batch_size: int, world: int, epoch: int, seed: int, limit: int | None
) -> list[list[int]]:
    """Global batches of one epoch (a seeded permutation), each of ``batch_size * world`` indices.

    Small datasets wrap around so every batch is full and every process gets the same count.
    """
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    order = torch.randperm(n, generator=g).tolist()
    gbs = batch_size * world
    n_batches = max(1, n // gbs)
    if limit:
        n_batches = min(n_batches, int(limit)) if n >= gbs else min(int(limit), 1)
    need = n_batches * gbs
    order = (order * (need // n + 1))[:need]
    return [order[b * gbs : (b + 1) * gbs] for b in range(n_batches)]
