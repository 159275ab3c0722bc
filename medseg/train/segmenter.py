"""What the segmentation models of several families share: the per-object model contract, the semantic base,
the small decoder head and the frozen-encoder + decoder model, and the torchvision ResNet encoders.

Every torch baseline (``traditional_models``) and the frozen-encoder model (``sam_family.frozen_encoder``)
is an :class:`ObjectSegmenter`: ``forward(batch)`` takes an ``ImageBatch``-like object (attributes or keys
``images [B,3,S,S]``, ``boxes [N,4]``, ``obj_img [N]``, optionally ``obj_class [N]``) and returns per-object
logits ``[N,S,S]``, so ``medseg.train.losses`` and ``medseg.eval.metrics`` apply unchanged. Semantic models
(:class:`SemanticSegmenter`) predict one sigmoid channel per foreground class (class id ``k`` -> channel
``k - 1``) and pick each object's class channel.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medseg.train.checkpoint import load_state_strict, read_checkpoint, state_dict_of
from medseg.train.weights import weights_record

__all__ = [
    "FrozenEncoderDecoder",
    "ObjectSegmenter",
    "RESNET50_CHANNELS",
    "SemanticSegmenter",
    "build_resnet",
    "check_object_inputs",
    "load_resnet_weights",
    "resnet50_trunk",
    "simple_decoder",
]


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


# ---------------------------------------------------------------------------------- the decoder head
def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def simple_decoder(in_channels: int, channels: int, num_classes: int) -> nn.Sequential:
    """Seed 001's SimpleDecoder: Conv-BN-ReLU x2 -> one ConvTranspose (x2 upsampling) + ReLU -> 1x1 conv:
    a ``[B, in_channels, h, w]`` feature map to ``[B, num_classes, 2h, 2w]`` logits (the caller resizes
    them to the image)."""
    c = int(channels)
    if c < 4:
        raise ValueError(f"decoder_channels must be >= 4, got {channels!r}")
    return nn.Sequential(
        _conv_bn_relu(int(in_channels), c),
        _conv_bn_relu(c, c),
        nn.ConvTranspose2d(c, c // 2, 2, stride=2),
        nn.ReLU(inplace=True),
        nn.Conv2d(c // 2, int(num_classes), 1),
    )


class FrozenEncoderDecoder(SemanticSegmenter):
    """A frozen encoder (no gradients, kept in eval: fixed BN statistics) + a trainable
    :func:`simple_decoder`; the logits are resized (bilinear) to the input. State dict: ``encoder.*``,
    ``decoder.*``.

    Args:
        encoder: ``[B, 3, S, S]`` -> ``[B, encoder_channels, h, w]`` features.
        encoder_channels: channels of the encoder's output.
        num_classes: number of foreground classes (output channels).
        decoder_channels: channels of the decoder's two Conv-BN-ReLU blocks.
    """

    def __init__(
        self, encoder: nn.Module, encoder_channels: int, *, num_classes: int = 1, decoder_channels: int = 256
    ) -> None:
        super().__init__(num_classes)
        self.encoder = encoder
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.encoder.eval()
        self.decoder = simple_decoder(int(encoder_channels), int(decoder_channels), self.num_classes)

    def train(self, mode: bool = True) -> FrozenEncoderDecoder:
        """Switch the decoder's mode; the frozen encoder always stays in eval mode (fixed BN statistics)."""
        super().train(mode)
        self.encoder.eval()
        return self

    def forward_semantic(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, S, S]`` -> ``[B, num_classes, S, S]`` logits."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be [B, 3, H, W], got {tuple(images.shape)}")
        with torch.no_grad():
            feats = self.encoder(images)
        logits = self.decoder(feats)
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------------- ResNet encoders
def load_resnet_weights(model: nn.Module, path: str | Path) -> None:
    """Load a torchvision-format ResNet ``state_dict`` from ``path`` into ``model`` (strict).

    Accepts a bare state dict or one wrapped as ``{"state_dict": ...}`` / ``{"model": ...}``. Never
    downloads. Read and checked by :mod:`medseg.train.checkpoint` like every other weights file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointError: the file cannot be read safely or its keys do not match ``model`` (names ``path``).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"encoder_weights file not found: {path}")
    obj = read_checkpoint(path)
    if isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    load_state_strict(model, state_dict_of(obj, path), path, what="a torchvision ResNet (encoder_weights)")


def build_resnet(factory, encoder_weights: str | Path | None, owner: str) -> tuple[nn.Module, dict]:
    """``factory(weights=None)`` (a torchvision ResNet; nothing is downloaded), loaded from
    ``encoder_weights`` when given, else logged as random init; returns it and its weights record."""
    resnet = factory(weights=None)
    if encoder_weights is not None:
        load_resnet_weights(resnet, encoder_weights)
    else:
        logging.getLogger(__name__).warning(
            "%s encoder: random init (model.net.encoder_weights not given; nothing is downloaded)", owner
        )
    return resnet, weights_record(encoder_weights)


RESNET50_CHANNELS = 2048  # channels of ResNet-50's layer4 (stride 32)


def resnet50_trunk(encoder_weights: str | Path | None, owner: str) -> tuple[nn.Sequential, dict]:
    """ImageNet ResNet-50 up to ``layer4`` (``[B,3,S,S]`` -> ``[B,2048,S/32,S/32]``), loaded from
    ``encoder_weights`` (or random init, logged), and its weights record (:func:`build_resnet`)."""
    import torchvision

    resnet, record = build_resnet(torchvision.models.resnet50, encoder_weights, owner)
    trunk = nn.Sequential(
        resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
        resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4,
    )  # fmt: skip
    return trunk, record
