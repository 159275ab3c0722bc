"""Whole-volume segmentation with SAM2 propagation: prompts on key slices, every organ batched, output
label volume on the input's own grid. Shared by 3D validation and ``inference_3d.py``."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from func_3d.exact import propagate_one_by_one
from func_3d.prompts import FramePrompts
from func_3d.propagate import propagate
from medseg.data.prompts import KINDS, PromptConfig, PromptKind, prompts_3d
from medseg.data.volume_prompts import VolumePrompts


def prompts_from_label(
    label_s: np.ndarray,
    obj_ids: list[int],
    prompt_cfg,
    *,
    mode: str = "key_slice",
    rng: np.random.Generator | None = None,
) -> VolumePrompts:
    """Prompts from a resized (D,S,S) label: the key slice of each organ (``key_slice``) or every
    ``prompt.freq``-th slice (``freq``), drawn as ``prompt_cfg`` says (the evaluation protocol's
    :meth:`~medseg.eval.evaluation.EvalProtocol.prompt_cfg` gives exact boxes unless
    ``eval_prompt.jitter_px`` asks for a robustness study)."""
    cfg = replace(PromptConfig.from_cfg(prompt_cfg))  # a copy: the caller's config is not changed
    if mode == "key_slice":
        cfg.freq = None
    elif mode != "freq":
        raise ValueError(f"func_3d.val_prompt={mode!r} must be key_slice or freq")
    by_id = prompts_3d(label_s, obj_ids, cfg, rng or np.random.default_rng(0))
    kept = [i for i in obj_ids if i in by_id]
    return VolumePrompts({k: by_id[i] for k, i in enumerate(kept)}, kept)


def frame_prompts(vp: VolumePrompts, prompt_type, size: int) -> dict[int, FramePrompts]:
    """Convert per-object prompt dicts into per-frame :class:`FramePrompts` for :func:`propagate`."""
    kind = prompt_type if isinstance(prompt_type, PromptKind) else KINDS[str(prompt_type)]
    O = len(vp.obj_ids)
    frames: dict[int, dict[int, dict]] = {}
    for o, per_z in vp.per_object.items():
        for z, p in per_z.items():
            frames.setdefault(int(z), {})[o] = p
    out: dict[int, FramePrompts] = {}
    for z, objs in frames.items():
        boxes = torch.full((O, 4), float("nan"))
        n_pts = max([len(p["point_labels"]) for p in objs.values()] + [0])
        points = torch.zeros(O, max(n_pts, 1), 2)
        labels = torch.full((O, max(n_pts, 1)), -1, dtype=torch.long)
        masks = torch.zeros(O, size, size)
        mask_valid = torch.zeros(O, dtype=torch.bool)
        for o, p in objs.items():
            if kind.mask and not p.get("empty"):
                masks[o] = torch.as_tensor(p["mask_prompt"], dtype=torch.float32)
                mask_valid[o] = True
                continue
            if kind.box and not p.get("empty"):
                boxes[o] = torch.as_tensor(p["box"], dtype=torch.float32)
            k = len(p["point_labels"])
            if k:
                points[o, :k] = torch.as_tensor(p["points"], dtype=torch.float32)
                labels[o, :k] = torch.as_tensor(p["point_labels"])
        out[z] = FramePrompts(
            boxes=boxes if bool(torch.isfinite(boxes).any()) else None,
            points=points if bool((labels >= 0).any()) else None,
            point_labels=labels if bool((labels >= 0).any()) else None,
            masks=masks if bool(mask_valid.any()) else None,
            mask_valid=mask_valid if bool(mask_valid.any()) else None,
        )
    return out


def largest_component(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    lab, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = ndimage.sum(mask, lab, range(1, n + 1))
    return lab == (int(np.argmax(sizes)) + 1)


def upsample_logits(low: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """Resize one slice's low-resolution logits ``[O, s, s]`` to ``[O, H, W]`` (bilinear) exactly as Meta's
    predictor does (``_get_orig_video_res_output``): objects as the batch, one channel each. Resizing them
    as O channels of one image gives the same values up to 1 ulp, which can flip a voxel where two
    organs' logits tie."""
    return F.interpolate(low[:, None].float(), size=out_hw, mode="bilinear", align_corners=False)[:, 0]


@torch.no_grad()
def segment_volume(
    model,
    images: torch.Tensor,
    vp: VolumePrompts,
    prompt_type: str,
    out_hw: tuple[int, int],
    *,
    threshold: float = 0.0,
    offload: bool = True,
    keep_largest: bool = False,
    progress: bool = False,
    exact: bool = False,
) -> np.ndarray:
    """Propagate the prompts of ``vp`` through ``images`` [D,3,S,S] (forward then backward from the first
    prompted slice, every object batched) and return the int label volume (D, H, W) at ``out_hw``.

    Low-resolution logits are resized straight to the input's (H, W), as Meta's predictor does; a voxel
    takes the object with the highest logit above ``threshold``. ``exact`` tracks the objects one after
    another with one-frame encoder calls (:func:`~func_3d.exact.propagate_one_by_one`): Meta's
    predictor voxel for voxel, several times slower.
    """
    D = images.shape[0]
    H, W = out_hw
    out = np.zeros((D, H, W), dtype=np.int64)
    if not vp.obj_ids:
        return out
    fp = frame_prompts(vp, prompt_type, model.image_size)
    res = (propagate_one_by_one if exact else propagate)(
        model,
        images,
        fp,
        len(vp.obj_ids),
        both_directions=True,
        train=False,
        offload=offload,
        return_logits=False,
        return_multimask=False,
    )
    ids = torch.tensor(vp.obj_ids)
    low = res.low_res_logits  # [D,O,s,s] on CPU when offloaded
    it = range(D)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="assemble", leave=False)
    for z in it:
        up = upsample_logits(low[z], (H, W))
        best, arg = up.max(0)
        fg = best > threshold
        out[z] = torch.where(fg, ids[arg.cpu()], torch.zeros_like(arg)).numpy()
    if keep_largest:
        for i in vp.obj_ids:
            m = out == i
            if m.any():
                keep = largest_component(m)
                out[m & ~keep] = 0
    return out
