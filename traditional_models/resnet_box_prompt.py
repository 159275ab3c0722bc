"""MedSAM-like baseline: ResNet encoder + light U-Net decoder conditioned on a box prompt.

The image is encoded once; each object gathers its image's features and is decoded with its box:
the box is (1) rasterised to a mask channel concatenated at every decoder stage and (2) embedded by an
MLP whose output FiLM-modulates (scale, shift) every decoder stage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from medseg.train.segmenter import ObjectSegmenter, build_resnet, check_object_inputs

__all__ = ["ResNetBoxPrompt", "rasterize_boxes"]

_ENCODERS = {"resnet18": torchvision.models.resnet18, "resnet34": torchvision.models.resnet34}


def rasterize_boxes(boxes: torch.Tensor, image_hw: tuple[int, int], out_hw: tuple[int, int]) -> torch.Tensor:
    """Binary box masks ``[N, 1, h, w]`` on an ``out_hw`` grid for ``boxes [N, 4]`` given in ``image_hw`` pixels."""
    (h_img, w_img), (h, w) = image_hw, out_hw
    sy, sx = h_img / h, w_img / w
    cy = torch.arange(h, device=boxes.device, dtype=boxes.dtype) * sy  # cell i covers [i*s, (i+1)*s)
    cx = torch.arange(w, device=boxes.device, dtype=boxes.dtype) * sx
    x0, y0, x1, y1 = (boxes[:, i, None] for i in range(4))
    # a box [x0, x1] covers pixels x0..x1, i.e. [x0, x1 + 1); a cell is on where it overlaps the box
    in_y = (cy[None] < y1 + 1) & (cy[None] + sy > y0)  # [N, h]
    in_x = (cx[None] < x1 + 1) & (cx[None] + sx > x0)  # [N, w]
    return (in_y[:, :, None] & in_x[:, None, :]).to(boxes.dtype)[:, None]


class _UpBlock(nn.Module):
    def __init__(self, cin: int, cskip: int, cout: int, embed_dim: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(cin + cskip + 1, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.film = nn.Linear(embed_dim, 2 * cout)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(
        self, x: torch.Tensor, skip: torch.Tensor | None, box_mask: torch.Tensor, embed: torch.Tensor
    ) -> torch.Tensor:
        size = box_mask.shape[-2:]
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        parts = [x] + ([skip] if skip is not None else []) + [box_mask]
        x = self.conv(torch.cat(parts, dim=1))
        gamma, beta = self.film(embed).chunk(2, dim=1)
        return F.relu(x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None])


class ResNetBoxPrompt(ObjectSegmenter):
    """Box-prompted ResNet U-Net ("MedSamLike"), trained from scratch by default.

    Args:
        encoder: ``"resnet18"`` or ``"resnet34"`` (torchvision, random init).
        encoder_weights: optional path of a torchvision state dict for the encoder (strict), never downloaded.
        decoder_channels: channels of the 4 decoder stages (strides 16, 8, 4, 2).
        box_embed_dim: width of the box-coordinate MLP.
        image_size: nominal input size (informative; any multiple of 32 works).
    """

    def __init__(
        self,
        *,
        encoder: str = "resnet18",
        encoder_weights: str | None = None,
        decoder_channels: tuple[int, ...] | list[int] = (256, 128, 64, 32),
        box_embed_dim: int = 128,
        image_size: int = 512,
    ) -> None:
        super().__init__()
        if encoder not in _ENCODERS:
            raise ValueError(f"encoder must be one of {sorted(_ENCODERS)}, got {encoder!r}")
        dec = [int(c) for c in decoder_channels]
        if len(dec) != 4 or min(dec) < 1:
            raise ValueError(f"decoder_channels must be 4 positive ints, got {list(decoder_channels)!r}")
        if int(box_embed_dim) < 1:
            raise ValueError(f"box_embed_dim must be >= 1, got {box_embed_dim!r}")
        self.image_size = int(image_size)
        resnet, self.encoder_weights_info = build_resnet(
            _ENCODERS[encoder], encoder_weights, type(self).__name__
        )
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu)  # stride 2, 64 ch
        self.pool = resnet.maxpool
        self.layer1, self.layer2 = resnet.layer1, resnet.layer2  # strides 4, 8 (64, 128 ch)
        self.layer3, self.layer4 = resnet.layer3, resnet.layer4  # strides 16, 32 (256, 512 ch)
        e = int(box_embed_dim)
        self.box_mlp = nn.Sequential(
            nn.Linear(4, e), nn.ReLU(inplace=True), nn.Linear(e, e), nn.ReLU(inplace=True)
        )
        skips = (256, 128, 64, 64)
        cins = (512, *dec[:3])
        self.up = nn.ModuleList(_UpBlock(cins[i], skips[i], dec[i], e) for i in range(4))
        self.head = nn.Conv2d(dec[3] + 1, 1, 1)

    def forward_objects(
        self,
        images: torch.Tensor,
        boxes: torch.Tensor,
        obj_img: torch.Tensor,
        obj_class: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Per-object logits ``[N, S, S]`` from images ``[B,3,S,S]``, boxes ``[N,4]``, obj_img ``[N]``."""
        if boxes is None:
            raise ValueError("ResNetBoxPrompt needs boxes [N, 4], got None")
        check_object_inputs(images, boxes, obj_img)
        h, w = images.shape[-2:]
        if h % 32 or w % 32:
            raise ValueError(f"image size must be a multiple of 32, got {(h, w)}")
        s2 = self.stem(images)
        s4 = self.layer1(self.pool(s2))
        s8 = self.layer2(s4)
        s16 = self.layer3(s8)
        s32 = self.layer4(s16)
        idx = obj_img.long()
        boxes = boxes.to(images.dtype)
        scale = boxes.new_tensor([w, h, w, h])
        embed = self.box_mlp(boxes / scale * 2 - 1)
        x = s32[idx]
        for block, skip in zip(self.up, (s16, s8, s4, s2)):
            mask = rasterize_boxes(boxes, (h, w), tuple(skip.shape[-2:]))
            x = block(x, skip[idx], mask, embed)
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        logits = self.head(torch.cat([x, rasterize_boxes(boxes, (h, w), (h, w))], dim=1))
        return logits[:, 0]
