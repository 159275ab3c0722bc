"""Frozen encoder + small trained decoder (``model=frozen_encoder_decoder``): SAM ViT-B or ResNet-50.

``model.encoder`` chooses the encoder: ``sam_vit_b`` (SAM's image encoder and neck, ``[B,256,S/16,S/16]``),
``resnet50`` (ImageNet ResNet-50 up to ``layer4``: :class:`medseg.train.segmenter.FrozenEncoderDecoder`,
the model of ``model=resnet50_frozen_decoder``), or ``auto``: SAM when its weights file exists, otherwise
ResNet-50. The decoder is the same head for both (:func:`medseg.train.segmenter.simple_decoder`). The
choice is logged and recorded in ``model.weights_info["encoder"]`` (``run_summary.json`` -> ``weights``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from medseg.train.segmenter import (
    RESNET50_CHANNELS,
    FrozenEncoderDecoder,
    SemanticSegmenter,
    resnet50_trunk,
    simple_decoder,
)
from medseg.train.weights import AUTO, is_unset, resolve_checkpoint, weights_record

log = logging.getLogger(__name__)


class SamEncoderDecoder(SemanticSegmenter):
    """Frozen SAM ViT image encoder (kept in eval, no gradients) + trainable :func:`simple_decoder`.

    Args:
        image_encoder: a ``segment_anything`` ``ImageEncoderViT`` sized for ``image_size``.
        normalize: the SAM input normalisation (:mod:`sam_family.preprocess`).
        num_classes: foreground classes (one sigmoid channel each).
        decoder_channels: channels of the decoder's Conv-BN-ReLU blocks.
    """

    def __init__(
        self,
        *,
        image_encoder: nn.Module,
        normalize: nn.Module,
        num_classes: int = 1,
        decoder_channels: int = 256,
    ) -> None:
        super().__init__(num_classes)
        self.image_encoder = image_encoder
        self.normalize = normalize
        for p in self.image_encoder.parameters():
            p.requires_grad_(False)
        self.image_encoder.eval()
        self.decoder = simple_decoder(
            int(image_encoder.neck[0].out_channels), decoder_channels, self.num_classes
        )

    def train(self, mode: bool = True) -> SamEncoderDecoder:
        super().train(mode)
        self.image_encoder.eval()
        return self

    def forward_semantic(self, images: torch.Tensor) -> torch.Tensor:
        """``[B,3,S,S]`` ImageNet-normalised -> ``[B,num_classes,S,S]`` logits."""
        with torch.no_grad():
            feats = self.image_encoder(self.normalize(images))
        logits = self.decoder(feats)
        return F.interpolate(logits, size=images.shape[-2:], mode="bilinear", align_corners=False)


def _sam_vit_b(
    *, sam_checkpoint, sam_default, download_hint, image_size, normalize, num_classes, decoder_channels, **_
):
    from sam_family.build import build_sam_net
    from sam_family.checkpoint import load_sam_weights

    sam_path = resolve_checkpoint(
        sam_checkpoint, default=sam_default, hint=download_hint, key="model.encoder_checkpoint",
        what="the SAM ViT-B encoder",
    )  # fmt: skip
    sam = build_sam_net("vit_b", image_size, normalize)
    if sam_path is not None:
        load_sam_weights(sam, sam_path, variant="vit_b")
    model = SamEncoderDecoder(
        image_encoder=sam.image_encoder, normalize=sam.normalize, num_classes=num_classes,
        decoder_channels=decoder_channels,
    )  # fmt: skip
    return model, weights_record(sam_path)


def _resnet50(*, resnet_weights, num_classes, decoder_channels, **_):
    encoder, record = resnet50_trunk(resnet_weights, "frozen_encoder_decoder (resnet50)")
    model = FrozenEncoderDecoder(
        encoder, RESNET50_CHANNELS, num_classes=num_classes, decoder_channels=decoder_channels
    )
    return model, record  # the file is hashed once, by build_resnet


ENCODERS = {"sam_vit_b": _sam_vit_b, "resnet50": _resnet50}


def choose_encoder(encoder: str, sam_checkpoint, sam_default: str | Path | None) -> tuple[str, str]:
    """``(name, reason)``: ``auto`` -> ``sam_vit_b`` when the SAM file exists, else ``resnet50``."""
    if encoder != AUTO:
        if encoder not in ENCODERS:
            raise ValueError(f"model.encoder={encoder!r}: choose one of {[*ENCODERS, AUTO]}")
        return encoder, "model.encoder"
    sam_file = (
        None if is_unset(sam_checkpoint) else (sam_default if str(sam_checkpoint) == AUTO else sam_checkpoint)
    )
    if sam_file is not None and Path(str(sam_file)).is_file():
        return "sam_vit_b", f"model.encoder=auto: SAM weights found at {sam_file}"
    return (
        "resnet50",
        f"model.encoder=auto: SAM weights not found ({sam_file or 'model.encoder_checkpoint=null'})",
    )


def build_frozen_encoder_decoder(
    *,
    checkpoint: str | None = None,
    encoder: str = AUTO,
    encoder_checkpoint: str | None = AUTO,
    default_encoder_checkpoint: str | None = None,
    download_hint: str | None = None,
    resnet_weights: str | None = None,
    num_classes: int = 1,
    decoder_channels: int = 256,
    image_size: int = 512,
    normalize: nn.Module | None = None,
) -> SemanticSegmenter:
    """Build the frozen-encoder model for ``encoder`` (``sam_vit_b`` | ``resnet50`` | ``auto``).

    Args:
        checkpoint: ``model.checkpoint``: one of our ``checkpoint_*.pth`` of this model (decoder and
            encoder, loaded strictly), or None: the decoder starts from scratch.
        encoder_checkpoint: SAM ViT-B weights: ``auto`` = ``default_encoder_checkpoint``, a path, or None
            (random SAM encoder, WARNING). With ``encoder=auto`` its existence decides the encoder.
        resnet_weights: torchvision ResNet-50 state dict for the ResNet-50 encoder (None = random, WARNING).
        normalize: the SAM input normalisation (used by the SAM encoder only).
    """
    name, reason = choose_encoder(str(encoder), encoder_checkpoint, default_encoder_checkpoint)
    log.info("frozen_encoder_decoder: encoder %s (%s)", name, reason)
    model, record = ENCODERS[name](
        sam_checkpoint=encoder_checkpoint, sam_default=default_encoder_checkpoint,
        download_hint=download_hint, resnet_weights=resnet_weights, image_size=int(image_size),
        normalize=normalize, num_classes=int(num_classes), decoder_channels=int(decoder_channels),
    )  # fmt: skip
    model.encoder_name = name
    path = None if is_unset(checkpoint) else resolve_checkpoint(checkpoint, what="frozen_encoder_decoder")
    if path is not None:
        from medseg.train.checkpoint import load_weights_file

        load_weights_file(model, path, f"model=frozen_encoder_decoder with encoder {name}")
    model.weights_info = weights_record(
        path, encoder={**record, "name": name, "requested": str(encoder), "reason": reason}
    )
    return model
