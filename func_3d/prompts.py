"""Prompts of the O objects on one frame, and their resolution into SAM2's per-object inputs."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class FramePrompts:
    """Prompts given on one frame to the O objects of a volume.

    Each object may be prompted by a box and/or clicks, or by a mask, or not at all on this frame
    (then it is tracked there from its memory). Coordinates are pixels of the ``S x S`` model input
    (``S = model.image_size``), x = column, y = row.

    Attributes:
        boxes: ``[O, 4]`` xyxy; a row of NaN means "no box" for that object.
        points: ``[O, P, 2]`` xy clicks.
        point_labels: ``[O, P]`` 1 positive, 0 negative, -1 padding (ignored).
        masks: ``[O, S, S]`` bool or {0, 1} float mask prompts; an empty mask says "absent here".
        mask_valid: ``[O]`` bool, which rows of ``masks`` are prompts (None: all rows).
    """

    boxes: Tensor | None = None
    points: Tensor | None = None
    point_labels: Tensor | None = None
    masks: Tensor | None = None
    mask_valid: Tensor | None = None

    def select(self, o: int) -> FramePrompts:
        """The prompts of object ``o`` alone (a frame prompts of one object)."""
        return FramePrompts(
            **{
                k: None if getattr(self, k) is None else getattr(self, k)[o : o + 1]
                for k in self.__dataclass_fields__
            }
        )

    def prompts_object(self, o: int) -> bool:
        """Whether object ``o`` has a box, a click or a mask prompt on this frame."""
        if self.boxes is not None and bool(torch.isfinite(self.boxes[o]).all()):
            return True
        if self.point_labels is not None and bool((self.point_labels[o] >= 0).any()):
            return True
        return self.masks is not None and (self.mask_valid is None or bool(self.mask_valid[o]))


@dataclass
class ObjectPrompt:
    """One object's prompt on one frame, in the form ``SAM2Base`` takes (batch of one).

    Attributes:
        point_coords: ``[1, P, 2]`` float, box corners (labels 2, 3) first, then clicks; or None.
        point_labels: ``[1, P]`` int32; or None.
        mask: ``[1, 1, S, S]`` float; or None.
    """

    point_coords: Tensor | None = None
    point_labels: Tensor | None = None
    mask: Tensor | None = None

    @property
    def group_key(self) -> tuple:
        """Objects with equal keys can share one batched SAM-head call exactly."""
        if self.mask is not None:
            return ("mask",)
        return ("points", self.point_coords.shape[1])


def resolve_frame_prompts(
    prompts: FramePrompts, num_objects: int, image_size: int, device: torch.device
) -> dict[int, ObjectPrompt]:
    """Split a frame's prompts into one :class:`ObjectPrompt` per prompted object.

    Args:
        prompts: the frame's prompts.
        num_objects: O.
        image_size: S.
        device: where the resolved tensors go.

    Returns:
        ``{object index: prompt}`` for the objects prompted on this frame.

    Raises:
        ValueError: on bad shapes, or an object with both a mask and a box/clicks.
    """
    n, S = num_objects, image_size
    out: dict[int, ObjectPrompt] = {}
    boxes, points, labels = prompts.boxes, prompts.points, prompts.point_labels
    if boxes is not None and tuple(boxes.shape) != (n, 4):
        raise ValueError(f"boxes must be [{n}, 4], got {tuple(boxes.shape)}")
    if (points is None) != (labels is None):
        raise ValueError("points and point_labels must be given together")
    if points is not None:
        if points.dim() != 3 or points.shape[0] != n or points.shape[2] != 2:
            raise ValueError(f"points must be [{n}, P, 2], got {tuple(points.shape)}")
        if tuple(labels.shape) != tuple(points.shape[:2]):
            raise ValueError(f"point_labels must be {tuple(points.shape[:2])}, got {tuple(labels.shape)}")
    mask_rows = torch.zeros(n, dtype=torch.bool)
    if prompts.masks is not None:
        if tuple(prompts.masks.shape) != (n, S, S):
            raise ValueError(
                f"masks must be [{n}, {S}, {S}] (model.image_size), got {tuple(prompts.masks.shape)}"
            )
        mask_rows = torch.ones(n, dtype=torch.bool)
        if prompts.mask_valid is not None:
            if tuple(prompts.mask_valid.shape) != (n,):
                raise ValueError(f"mask_valid must be [{n}], got {tuple(prompts.mask_valid.shape)}")
            mask_rows = prompts.mask_valid.detach().cpu().bool()

    for o in range(n):
        coords, labs = [], []
        if boxes is not None and bool(torch.isfinite(boxes[o]).all()):
            coords.append(boxes[o].float().reshape(2, 2))
            labs.append(torch.tensor([2, 3], dtype=torch.int32, device=boxes.device))
        if points is not None:
            keep = labels[o] >= 0
            if bool(keep.any()):
                coords.append(points[o][keep].float())
                labs.append(labels[o][keep].to(torch.int32))
        if mask_rows[o]:
            if coords:
                raise ValueError(f"object {o} has both a mask prompt and a box/clicks on the same frame")
            out[o] = ObjectPrompt(mask=prompts.masks[o].to(device).float()[None, None])
        elif coords:
            out[o] = ObjectPrompt(
                point_coords=torch.cat([c.to(device) for c in coords])[None],
                point_labels=torch.cat([lab.to(device) for lab in labs])[None],
            )
    return out
