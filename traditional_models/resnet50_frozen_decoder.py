"""Frozen ImageNet ResNet-50 encoder + small trainable decoder (semantic, one channel per class)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from medseg.train.checkpoint import load_state_strict, read_checkpoint, state_dict_of
from medseg.train.weights import weights_record
from traditional_models import SemanticSegmenter

__all__ = ["ResNet50FrozenDecoder", "build_resnet", "load_resnet_weights", "simple_decoder"]


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


class ResNet50FrozenDecoder(SemanticSegmenter):
    """ResNet-50 (up to ``layer4``, stride 32, frozen, BN kept in eval) + trainable decoder.

    Decoder (seed 001's SimpleDecoder): Conv-BN-ReLU x2 -> one ConvTranspose (x2) -> 1x1 conv -> bilinear
    upsampling to the input size.

    Args:
        num_classes: number of foreground classes (output channels).
        encoder_weights: path of a torchvision ``resnet50`` state dict (ImageNet), or None for random init.
        decoder_channels: channels of the two Conv-BN-ReLU blocks.
        image_size: nominal input size (informative; any multiple of 32 works).
    """

    def __init__(
        self,
        *,
        num_classes: int = 1,
        encoder_weights: str | None = None,
        decoder_channels: int = 256,
        image_size: int = 512,
    ) -> None:
        super().__init__(num_classes)
        if int(decoder_channels) < 4:
            raise ValueError(f"decoder_channels must be >= 4, got {decoder_channels!r}")
        self.image_size = int(image_size)
        resnet, self.encoder_weights_info = build_resnet(
            torchvision.models.resnet50, encoder_weights, type(self).__name__
        )
        self.encoder = nn.Sequential(
            resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool,
            resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4,
        )  # fmt: skip
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.encoder.eval()
        self.decoder = simple_decoder(2048, int(decoder_channels), self.num_classes)

    def train(self, mode: bool = True) -> ResNet50FrozenDecoder:
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
