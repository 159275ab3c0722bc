"""What a propagation returns: :class:`PropagationOutput` and its assembly from per-frame results.

During a propagation each object's prediction on each visited frame is kept as a :class:`FrameResult`;
:func:`gather_output` stacks those of a clip's objects into ``[T, O, ...]`` tensors, fills the frames
never visited with ``NO_OBJ_SCORE`` logits, and upsamples the logits to the model's input size.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from sam2.modeling.sam2_base import NO_OBJ_SCORE
from torch import Tensor

NUM_MULTIMASK = 3  # SAM2's mask decoder gives 3 candidates when multimask output is on


@dataclass
class PropagationOutput:
    """Per-frame, per-object predictions of one propagation.

    Entries never predicted (frames not visited, e.g. before the start in a forward-only run) hold
    ``NO_OBJ_SCORE`` (-1024) logits, zero IoUs and ``valid == False``. ``s = S // 4``, M = 3.

    Attributes:
        logits: ``[T, O, S, S]`` final mask logits at the model's input size (the low-resolution
            logits upsampled bilinearly, as the predictor returns them); None if not requested.
        low_res_logits: ``[T, O, s, s]`` the selected mask logits of the SAM decoder.
        object_score_logits: ``[T, O, 1]`` object presence logits.
        multimask_logits: ``[T, O, M, s, s]`` all decoder candidates (for SAM2's loss, which takes the
            best of them); where the decoder gave one mask (box or several clicks) it is repeated M
            times, which leaves min-over-candidates and mean-over-candidates losses unchanged. None
            unless requested.
        ious: ``[T, O, M]`` predicted IoUs of the candidates (repeated like ``multimask_logits``).
        num_masks: ``[T, O]`` long, how many candidates the decoder really gave (1 or 3; 0 = none).
        valid: ``[T, O]`` bool, which entries hold a prediction.
        cond: ``[T, O]`` bool, which entries are conditioning (prompted) frames of their object.
    """

    logits: Tensor | None
    low_res_logits: Tensor
    object_score_logits: Tensor
    multimask_logits: Tensor | None
    ious: Tensor
    num_masks: Tensor
    valid: Tensor
    cond: Tensor


@dataclass
class FrameResult:
    """One object on one frame: ``multimasks [1, M, s, s]``, ``ious [1, M]``, ``low_res [1, 1, s, s]``,
    ``score [1, 1]``."""

    multimasks: Tensor
    ious: Tensor
    low_res: Tensor
    score: Tensor


def gather_output(
    results: Sequence[Mapping[int, FrameResult]],
    cond_frames: Sequence[Collection[int]],
    *,
    num_frames: int,
    image_size: int,
    return_logits: bool,
    return_multimask: bool,
    output_device: torch.device,
) -> PropagationOutput:
    """One clip's :class:`PropagationOutput` from its O objects' results.

    Args:
        results: per object ``{frame: FrameResult}`` (at least one result among them).
        cond_frames: per object the frames that were its conditioning frames.
        num_frames: T.
        image_size: S, the model's input size (``s = S // 4``).
        return_logits: also upsample the logits to ``[T, O, S, S]``.
        return_multimask: also stack all decoder candidates.
        output_device: where the tensors go.
    """
    T, n = num_frames, len(results)
    s = image_size // 4
    ref = next(r for per_obj in results for r in per_obj.values())
    kw = {"device": ref.low_res.device}
    miss_mask = torch.full((1, 1, s, s), NO_OBJ_SCORE, dtype=ref.low_res.dtype, **kw)
    miss_multi = miss_mask.expand(1, NUM_MULTIMASK, s, s)
    miss_iou = torch.zeros(1, NUM_MULTIMASK, dtype=ref.ious.dtype, **kw)
    miss_score = torch.full((1, 1), NO_OBJ_SCORE, dtype=ref.score.dtype, **kw)
    low, multi, ious, scores = [], [], [], []
    num_masks = torch.zeros(T, n, dtype=torch.long)
    valid = torch.zeros(T, n, dtype=torch.bool)
    cond = torch.zeros(T, n, dtype=torch.bool)
    for t in range(T):
        for j in range(n):
            r = results[j].get(t)
            cond[t, j] = t in cond_frames[j]
            if r is None:
                low.append(miss_mask)
                multi.append(miss_multi)
                ious.append(miss_iou)
                scores.append(miss_score)
                continue
            valid[t, j] = True
            m = r.multimasks.shape[1]
            num_masks[t, j] = m
            low.append(r.low_res)
            scores.append(r.score)
            rep = NUM_MULTIMASK // m if NUM_MULTIMASK % m == 0 else 1
            ious.append(r.ious.repeat(1, rep))
            if return_multimask:
                multi.append(r.multimasks.repeat(1, rep, 1, 1))
    low_res = torch.cat(low).reshape(T, n, s, s)
    logits = None
    if return_logits:
        size = (image_size,) * 2
        logits = torch.stack(
            [
                F.interpolate(low_res[t][:, None], size=size, mode="bilinear", align_corners=False)[:, 0].to(
                    output_device
                )
                for t in range(T)
            ]
        )
    return PropagationOutput(
        logits=logits,
        low_res_logits=low_res.to(output_device),
        object_score_logits=torch.cat(scores).reshape(T, n, 1).to(output_device),
        multimask_logits=torch.cat(multi).reshape(T, n, NUM_MULTIMASK, s, s).to(output_device)
        if return_multimask
        else None,
        ious=torch.cat(ious).reshape(T, n, NUM_MULTIMASK).to(output_device),
        num_masks=num_masks,
        valid=valid,
        cond=cond,
    )
