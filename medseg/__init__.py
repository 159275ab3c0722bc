"""Shared data layer, losses, metrics and engine for SAM2 and baselines on medical images.

Kept import-free on purpose: ``import medseg`` must stay cheap (no torch, no sam2).
"""

from medseg.errors import DataError

__all__ = ["DataError"]
