"""SAM / MedSAM with gradients: image encoder, prompt encoder and mask decoder of ``segment_anything``
driven per image, as ``SamPredictor.predict_torch`` does, but batched over images and objects.

Parameter names are Meta's (``image_encoder.*``, ``prompt_encoder.*``, ``mask_decoder.*``), so Meta's and
MedSAM's files load strictly and our checkpoints stay in the same format.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# preset -> parameter-name patterns that stay trainable (sam2_train.trainable.apply_trainable applies them)
PRESETS: dict[str, list[str]] = {
    "full": ["*"],
    "decoder_only": ["mask_decoder.*"],
    "frozen_image_encoder": ["prompt_encoder.*", "mask_decoder.*"],
    "frozen_prompt_encoder": ["image_encoder.*", "mask_decoder.*"],
}


class SamNet(nn.Module):
    """A SAM ViT model on ``image_size`` inputs.

    Args:
        image_encoder, prompt_encoder, mask_decoder: the modules of a ``segment_anything.modeling.Sam``
            (already sized for ``image_size``, see :func:`sam_family.build.resize_sam`).
        normalize: module mapping ImageNet-normalised images to the encoder's input
            (:mod:`sam_family.preprocess`); None = identity.
        variant: ``vit_b`` | ``vit_l`` | ``vit_h`` (for messages and checkpoint checks).
    """

    def __init__(
        self,
        *,
        image_encoder: nn.Module,
        prompt_encoder: nn.Module,
        mask_decoder: nn.Module,
        normalize: nn.Module | None = None,
        variant: str = "vit_b",
    ) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.prompt_encoder = prompt_encoder
        self.mask_decoder = mask_decoder
        self.normalize = normalize if normalize is not None else nn.Identity()
        self.variant = variant

    @property
    def image_size(self) -> int:
        return int(self.image_encoder.img_size)

    @property
    def sam_prompt_encoder(self) -> nn.Module:
        """SAM2's name of the prompt encoder (read by :mod:`medseg.train.class_prompts` for the token width)."""
        return self.prompt_encoder

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """``[B,3,S,S]`` ImageNet-normalised images -> image embeddings ``[B,256,S/16,S/16]``."""
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"images are {tuple(images.shape[-2:])} but the model was built for "
                f"{self.image_size}x{self.image_size} (model.image_size)"
            )
        return self.image_encoder(self.normalize(images))

    def _prompt(self, points, boxes, masks, n: int, sparse_prompts=None):
        sparse, dense = self.prompt_encoder(points=points, boxes=boxes, masks=masks)
        if sparse.shape[0] != n:  # no prompt at all: SAM embeds nothing, one dense "no mask" map
            sparse, dense = sparse.expand(n, -1, -1), dense.expand(n, -1, -1, -1)
        if sparse_prompts is not None:  # learned class tokens in place of the (empty) sparse prompt
            sparse = sparse_prompts
        return sparse, dense

    def decode(
        self,
        embed: torch.Tensor,
        obj_img: torch.Tensor,
        *,
        boxes: torch.Tensor | None = None,
        points: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
        sparse_prompts: torch.Tensor | None = None,
        multimask_output: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Prompt encoder + mask decoder for N objects, image by image (SAM's decoder takes one image).

        Args:
            embed: ``[B,256,h,w]`` image embeddings; obj_img: ``[N]`` image index of each object.
            boxes: ``[N,4]`` xyxy in ``image_size`` pixels; points ``[N,P,2]`` xy with point_labels
                ``[N,P]`` (1 positive, 0 negative, -1 padding); mask_inputs ``[N,1,*,*]`` logits.
            sparse_prompts: ``[N,k,256]`` tokens replacing the sparse prompt (automatic mode's class prompts).

        Returns:
            low-res logits ``[N,M,S/4,S/4]`` and predicted IoUs ``[N,M]`` (M = 3 with multimask, else 1).
        """
        n = obj_img.shape[0]
        if mask_inputs is not None and tuple(mask_inputs.shape[-2:]) != tuple(
            self.prompt_encoder.mask_input_size
        ):
            mask_inputs = F.interpolate(
                mask_inputs.float(), size=self.prompt_encoder.mask_input_size, mode="bilinear",
                align_corners=False, antialias=True,
            )  # fmt: skip
        pe = self.prompt_encoder.get_dense_pe()
        m = 3 if multimask_output else 1
        side = 4 * embed.shape[-1]
        low = embed.new_zeros((n, m, side, side))
        ious = embed.new_zeros((n, m))
        for b in torch.unique(obj_img).tolist():
            idx = (obj_img == b).nonzero().flatten()
            pts = (points[idx], point_labels[idx]) if points is not None else None
            sparse, dense = self._prompt(
                pts,
                boxes[idx] if boxes is not None else None,
                mask_inputs[idx] if mask_inputs is not None else None,
                idx.numel(),
                sparse_prompts[idx] if sparse_prompts is not None else None,
            )
            lo, iou = self.mask_decoder(
                image_embeddings=embed[b : b + 1],
                image_pe=pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask_output,
            )
            low = low.index_put((idx,), lo.to(low.dtype))
            ious = ious.index_put((idx,), iou.to(ious.dtype))
        return low.float(), ious.float()
