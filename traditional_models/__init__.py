"""Baselines (ResNet, UNet, YOLO) trained and scored on the same medseg datasets, losses and metrics.

Every torch baseline is an :class:`ObjectSegmenter`: ``forward(batch)`` takes an ``ImageBatch``-like
object (attributes or keys ``images [B,3,S,S]``, ``boxes [N,4]``, ``obj_img [N]``, optionally
``obj_class [N]``) and returns per-object logits ``[N,S,S]``, so ``medseg.train.losses`` and
``medseg.eval.metrics`` apply unchanged. Semantic models (:class:`SemanticSegmenter`) predict one sigmoid
channel per foreground class (class id ``k`` -> channel ``k - 1``) and pick each object's class channel.

Submodules are imported on use (``traditional_models.yolo`` needs the optional ``ultralytics``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["ObjectSegmenter", "SemanticSegmenter", "check_object_inputs"]


def _get(batch: Any, name: str, default: Any = ...) -> Any:
    if isinstance(batch, Mapping):
        value = batch.get(name, default)
    else:
        value = getattr(batch, name, default)
    if value is ...:
        raise ValueError(f"batch has no '{name}' (need images, boxes, obj_img): {type(batch).__name__}")
    return value


def check_object_inputs(images: torch.Tensor, boxes: torch.Tensor | None, obj_img: torch.Tensor) -> None:
    """Raise ``ValueError`` unless images ``[B,3,H,W]``, boxes ``[N,4]`` (or None) and obj_img ``[N]`` agree."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
    if obj_img.ndim != 1:
        raise ValueError(f"obj_img must be [N], got {tuple(obj_img.shape)}")
    if boxes is not None and (boxes.ndim != 2 or boxes.shape != (obj_img.shape[0], 4)):
        raise ValueError(f"boxes must be [N, 4] with N = {obj_img.shape[0]}, got {tuple(boxes.shape)}")
    if obj_img.numel() and (int(obj_img.min()) < 0 or int(obj_img.max()) >= images.shape[0]):
        raise ValueError(f"obj_img values must index the {images.shape[0]} images, got {obj_img.tolist()}")


class ObjectSegmenter(nn.Module):
    """Base class: a model that returns one logit map per prompted object."""

    def forward(self, batch: Any) -> torch.Tensor:
        """Per-object logits ``[N, S, S]`` for an ``ImageBatch``-like ``batch``."""
        return self.forward_objects(
            _get(batch, "images"),
            _get(batch, "boxes"),
            _get(batch, "obj_img"),
            _get(batch, "obj_class", None),
        )

    def forward_objects(
        self,
        images: torch.Tensor,
        boxes: torch.Tensor,
        obj_img: torch.Tensor,
        obj_class: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-object logits.

        Args:
            images: ``[B, 3, S, S]`` normalised images.
            boxes: ``[N, 4]`` boxes ``x0, y0, x1, y1`` in pixels of ``images``.
            obj_img: ``[N]`` index of each object's image.
            obj_class: ``[N]`` label id of each object (needed by multi-class semantic models).

        Returns:
            ``[N, S, S]`` logits.
        """
        raise NotImplementedError


class SemanticSegmenter(ObjectSegmenter):
    """A semantic model with ``num_classes`` sigmoid channels; objects read their class channel.

    Args:
        num_classes: number of foreground classes; label id ``k`` (1..num_classes) is channel ``k - 1``.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
        self.num_classes = int(num_classes)

    def forward_semantic(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` -> ``[B, num_classes, S, S]`` logits."""
        raise NotImplementedError

    def forward_objects(
        self,
        images: torch.Tensor,
        boxes: torch.Tensor | None,
        obj_img: torch.Tensor,
        obj_class: torch.Tensor | None = None,
    ) -> torch.Tensor:
        check_object_inputs(images, boxes, obj_img)
        if obj_class is None:
            if self.num_classes != 1:
                raise ValueError(f"obj_class is required with num_classes={self.num_classes}")
            obj_class = torch.ones_like(obj_img)
        if obj_class.shape != obj_img.shape:
            raise ValueError(f"obj_class must be [N] like obj_img, got {tuple(obj_class.shape)}")
        if obj_class.numel() and (int(obj_class.min()) < 1 or int(obj_class.max()) > self.num_classes):
            raise ValueError(f"obj_class ids must be in 1..{self.num_classes}, got {obj_class.tolist()}")
        logits = self.forward_semantic(images)
        return logits[obj_img.long(), obj_class.long() - 1]

    @torch.no_grad()
    def predict_labels(self, images: torch.Tensor, threshold: float = 0.0) -> torch.Tensor:
        """Label map ``[B, S, S]`` (long): the best class where its logit exceeds ``threshold``, else 0."""
        logits = self.forward_semantic(images)
        best, idx = logits.max(dim=1)
        return torch.where(best > threshold, idx + 1, torch.zeros_like(idx))
