"""SAM2 on single images, with gradients: the computation of Meta's ``SAM2ImagePredictor``
(``set_image`` + ``_predict``), batched over images and over the objects on them.

Objects are flattened over the batch: object ``n`` belongs to image ``obj_img[n]``; the image
features are computed once per image and indexed per object.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class ImageFeatures:
    """Backbone output of B images. image_embed [B,C,S/16,S/16]; high_res [[B,32,S/4,S/4], [B,64,S/8,S/8]];
    vision_feats/vision_pos: SAM2's flattened levels ([HW,B,C]) for the memory modules."""

    image_embed: torch.Tensor
    high_res: list[torch.Tensor]
    vision_feats: list[torch.Tensor]
    vision_pos: list[torch.Tensor]
    feat_sizes: list[tuple[int, int]]


def encode_images(model, images: torch.Tensor, add_no_mem_embed: bool = True) -> ImageFeatures:
    """Run the image encoder on ``images`` [B,3,S,S] (ImageNet-normalised)."""
    backbone_out = model.forward_image(images)
    _, vision_feats, vision_pos, feat_sizes = model._prepare_backbone_features(backbone_out)
    top = vision_feats[-1]
    if add_no_mem_embed and model.directly_add_no_mem_embed:
        top = top + model.no_mem_embed
    B = images.shape[0]
    levels = vision_feats[:-1] + [top]
    feats = [f.permute(1, 2, 0).reshape(B, -1, *s) for f, s in zip(levels, feat_sizes)]
    return ImageFeatures(feats[-1], feats[:-1], vision_feats, vision_pos, feat_sizes)


def prompt_points(
    boxes: torch.Tensor | None, points: torch.Tensor | None, point_labels: torch.Tensor | None, n: int, device
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Merge boxes ([N,4] xyxy, labels 2/3) and clicks ([N,P,2], labels 1/0/-1) into SAM's point input."""
    coords, labels = [], []
    if boxes is not None:
        coords.append(boxes.reshape(n, 2, 2).float())
        box_labels = torch.tensor([[2, 3]], dtype=torch.int32, device=device).repeat(n, 1)
        no_box = (boxes == 0).all(1)  # an empty object under prompt.empty=negative has no box
        labels.append(torch.where(no_box[:, None], torch.full_like(box_labels, -1), box_labels))
    if points is not None and points.numel():
        coords.append(points.float())
        labels.append(point_labels.to(torch.int32))
    if not coords:
        return None
    return torch.cat(coords, 1), torch.cat(labels, 1)


def decode_objects(
    model,
    image_embed: torch.Tensor,
    high_res: list[torch.Tensor],
    obj_img: torch.Tensor,
    *,
    boxes=None,
    points=None,
    point_labels=None,
    mask_inputs=None,
    sparse_prompts: torch.Tensor | None = None,
    multimask_output: bool = True,
):
    """Prompt encoder + mask decoder for N objects.

    Args:
        image_embed: [B,C,h,w] (conditioned or not); high_res: SAM2's two high-res levels [B,...].
        obj_img: [N] image index of each object.
        boxes: [N,4] xyxy in ``model.image_size`` pixels or None; points [N,P,2] xy + point_labels [N,P].
        mask_inputs: [N,1,S/4,S/4] low-res logits/masks or None.
        sparse_prompts: [N,K,C] learned tokens used in place of the sparse prompt (automatic mode with
            class prompts, :mod:`medseg.train.class_prompts`), or None.

    Returns:
        low_res [N,M,S/4,S/4] logits, ious [N,M], object_score_logits [N,1], tokens [N,M?,C].
    """
    n = obj_img.shape[0]
    device = image_embed.device
    pts = prompt_points(boxes, points, point_labels, n, device)
    if pts is None:  # SAM's "no prompt": one padding point
        pts = (torch.zeros(n, 1, 2, device=device), -torch.ones(n, 1, dtype=torch.int32, device=device))
    if mask_inputs is not None and mask_inputs.shape[-2:] != model.sam_prompt_encoder.mask_input_size:
        mask_inputs = F.interpolate(
            mask_inputs.float(),
            size=model.sam_prompt_encoder.mask_input_size,
            mode="bilinear",
            align_corners=False,
            antialias=True,
        )
    sparse, dense = model.sam_prompt_encoder(points=pts, boxes=None, masks=mask_inputs)
    if sparse_prompts is not None:
        sparse = sparse_prompts.to(sparse.dtype)
    low_res, ious, tokens, obj_scores = model.sam_mask_decoder(
        image_embeddings=image_embed[obj_img],
        image_pe=model.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask_output,
        repeat_image=False,
        high_res_features=[h[obj_img] for h in high_res],
    )
    return low_res.float(), ious.float(), obj_scores.float(), tokens


def upsample(low_res: torch.Tensor, size: int) -> torch.Tensor:
    """Low-res logits [N,M,s,s] -> [N,M,size,size] (bilinear, as SAM2's predictors do)."""
    return F.interpolate(low_res, size=(size, size), mode="bilinear", align_corners=False)
