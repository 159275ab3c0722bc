"""Build SAM / MedSAM ViT models from ``segment_anything.sam_model_registry`` at any image size.

Meta's builder fixes 1024 px (64x64 tokens). For another size S (a multiple of 16) the built model is
resized: the absolute ``pos_embed`` to ``(1, S/16, S/16, C)`` and the relative positions of the
global-attention blocks to ``2*S/16 - 1`` rows (windowed blocks keep theirs: they depend on the window,
not on the image); the prompt encoder's frame follows. Weights made for another grid (Meta's 1024 px
files) are interpolated the same way when loaded (:func:`adapt_state_dict`): ``pos_embed`` bicubically,
``rel_pos`` linearly (what ``segment_anything`` itself does when sizes differ at run time).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from sam_family.model import PRESETS, SamNet

log = logging.getLogger(__name__)

VARIANTS = ("vit_b", "vit_l", "vit_h")
PATCH = 16


def check_image_size(image_size: int) -> int:
    image_size = int(image_size)
    if image_size % PATCH or not 64 <= image_size <= 1024:
        raise ValueError(f"model.image_size={image_size} must be a multiple of 16 between 64 and 1024")
    return image_size


def resize_pos_embed(pos: torch.Tensor, n: int) -> torch.Tensor:
    """``(1, g, g, C)`` absolute position embedding -> ``(1, n, n, C)`` (bicubic, antialiased)."""
    if pos.shape[1:3] == (n, n):
        return pos
    x = pos.permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(n, n), mode="bicubic", align_corners=False, antialias=n < pos.shape[1])
    return x.permute(0, 2, 3, 1).to(pos.dtype).contiguous()


def resize_rel_pos(rel: torch.Tensor, length: int) -> torch.Tensor:
    """``(L, C)`` relative position table -> ``(length, C)`` (linear, as ``segment_anything`` does)."""
    if rel.shape[0] == length:
        return rel
    x = F.interpolate(rel.float().t()[None], size=length, mode="linear")
    return x[0].t().to(rel.dtype).contiguous()


def _global_rel_pos_keys(model: nn.Module) -> list[str]:
    keys = []
    for i, blk in enumerate(model.image_encoder.blocks):
        if blk.window_size == 0 and getattr(blk.attn, "use_rel_pos", False):
            keys += [f"image_encoder.blocks.{i}.attn.rel_pos_h", f"image_encoder.blocks.{i}.attn.rel_pos_w"]
    return keys


def resize_sam(sam: nn.Module, image_size: int) -> nn.Module:
    """Resize a ``Sam`` (or :class:`SamNet`) built for 1024 px to ``image_size`` in place."""
    image_size = check_image_size(image_size)
    n = image_size // PATCH
    enc = sam.image_encoder
    enc.img_size = image_size
    if enc.pos_embed is not None:
        enc.pos_embed = nn.Parameter(resize_pos_embed(enc.pos_embed.data, n))
    for blk in enc.blocks:
        if blk.window_size == 0 and getattr(blk.attn, "use_rel_pos", False):
            blk.attn.rel_pos_h = nn.Parameter(resize_rel_pos(blk.attn.rel_pos_h.data, 2 * n - 1))
            blk.attn.rel_pos_w = nn.Parameter(resize_rel_pos(blk.attn.rel_pos_w.data, 2 * n - 1))
    pe = sam.prompt_encoder
    pe.image_embedding_size = (n, n)
    pe.input_image_size = (image_size, image_size)
    pe.mask_input_size = (4 * n, 4 * n)
    return sam


def adapt_state_dict(sd: dict, model: nn.Module) -> dict:
    """``sd`` with ``pos_embed`` and global ``rel_pos`` interpolated to ``model``'s grid (other keys as is).

    Only tensors whose channel width already matches are resized; anything else is left for the strict
    shape check to report.
    """
    want = model.state_dict()
    out = dict(sd)
    key = "image_encoder.pos_embed"
    if key in sd and key in want and sd[key].ndim == 4 and sd[key].shape[-1] == want[key].shape[-1]:
        out[key] = resize_pos_embed(sd[key], int(want[key].shape[1]))
    for key in _global_rel_pos_keys(model):
        if key in sd and sd[key].ndim == 2 and sd[key].shape[-1] == want[key].shape[-1]:
            out[key] = resize_rel_pos(sd[key], int(want[key].shape[0]))
    return out


def build_sam_net(variant: str, image_size: int = 1024, normalize: nn.Module | None = None) -> SamNet:
    """A randomly initialised :class:`SamNet` of ``variant`` at ``image_size``."""
    from segment_anything import sam_model_registry

    if variant not in VARIANTS:
        raise ValueError(f"model.variant={variant!r} is not a SAM variant; choose one of {list(VARIANTS)}")
    sam = resize_sam(sam_model_registry[variant](checkpoint=None), image_size)
    net = SamNet(
        image_encoder=sam.image_encoder,
        prompt_encoder=sam.prompt_encoder,
        mask_decoder=sam.mask_decoder,
        normalize=normalize,
        variant=variant,
    )
    return net.train()


def build_sam_model(
    variant: str,
    *,
    image_size: int = 1024,
    checkpoint: str | None = None,
    default_checkpoint: str | None = None,
    download_hint: str | None = None,
    trainable: str | list[str] | None = None,
    normalize: nn.Module | None = None,
    device: str | torch.device = "cpu",
) -> SamNet:
    """Build ``variant`` at ``image_size`` and load ``checkpoint`` strictly.

    Args:
        variant: ``vit_b`` | ``vit_l`` | ``vit_h`` (MedSAM is ``vit_b``).
        image_size: input side, a multiple of 16 in [64, 1024].
        checkpoint: ``auto`` = ``default_checkpoint`` (Meta's or MedSAM's file; an error naming it and
            ``download_hint`` when missing), a path (Meta/MedSAM raw state dict or our
            ``checkpoint_*.pth``), or None = random init (logged as a WARNING).
        trainable: a preset of :data:`sam_family.model.PRESETS` or a list of name patterns.
        normalize: the model's input normalisation (:mod:`sam_family.preprocess`).
    """
    from medseg.train.weights import resolve_checkpoint, weights_record
    from sam_family.checkpoint import load_sam_weights

    path = resolve_checkpoint(
        checkpoint, default=default_checkpoint, hint=download_hint, what=f"SAM {variant}"
    )
    model = build_sam_net(variant, image_size, normalize)
    if path is not None:
        load_sam_weights(model, path, variant=variant)
    model.weights_info = weights_record(path)
    if trainable is not None:
        from medseg.train.params import apply_trainable

        apply_trainable(model, trainable, PRESETS)
    return model.to(device)
