"""Frozen ImageNet ResNet-50 encoder + small trainable decoder (semantic, one channel per class)."""

from __future__ import annotations

from medseg.train.segmenter import RESNET50_CHANNELS, FrozenEncoderDecoder, resnet50_trunk

__all__ = ["ResNet50FrozenDecoder"]


class ResNet50FrozenDecoder(FrozenEncoderDecoder):
    """ResNet-50 (up to ``layer4``, stride 32, frozen, BN kept in eval) + trainable decoder.

    Decoder (seed 001's SimpleDecoder, :func:`medseg.train.segmenter.simple_decoder`): Conv-BN-ReLU x2 ->
    one ConvTranspose (x2) -> 1x1 conv -> bilinear upsampling to the input size.

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
        if int(num_classes) < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes!r}")
        if int(decoder_channels) < 4:
            raise ValueError(f"decoder_channels must be >= 4, got {decoder_channels!r}")
        encoder, info = resnet50_trunk(encoder_weights, type(self).__name__)
        super().__init__(
            encoder, RESNET50_CHANNELS, num_classes=num_classes, decoder_channels=decoder_channels
        )
        self.image_size = int(image_size)
        self.encoder_weights_info = info
