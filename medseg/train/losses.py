"""Segmentation losses for per-object binary logits, built from ``monai.losses``.

Every loss here shares one call signature so that SAM2 and the baselines plug into the same
training step::

    loss_fn(logits, target, iou_pred=None, obj_score=None) -> {"loss": total, "<part>": value, ...}

- ``logits``: ``[N, H, W]`` (one mask per object) or ``[N, M, H, W]`` (``M`` candidate masks per object,
  SAM2's multimask output). Raw logits, sigmoid is applied inside.
- ``target``: ``[N, H, W]`` bool or float in {0, 1}.
- ``iou_pred``: ``[N, M]`` predicted IoU per candidate mask (``M = 1`` for single-mask logits).
- ``obj_score``: ``[N, 1]`` (or ``[N]``) object-presence logit.
- ``valid``: optional ``[N, H, W]`` bool, False on unannotated pixels (nnU-Net's ``ignore`` label). Those
  pixels are neither foreground nor background: their logit is replaced by a constant far below zero
  and their target by 0 before any part is computed, so they add nothing to Dice, BCE/focal or the
  IoU target and receive no gradient (the per-pixel means still divide by all ``H * W`` pixels).

Reduction: every part is computed per object (a mask's Dice uses only that mask's pixels, never pooled
over the batch) and then averaged over the ``N`` objects. With multimask logits the mask parts are taken
from the candidate with the lowest mask loss (SAM2 behaviour, ``argmin`` without gradient), so only that
candidate receives the mask gradient.

The returned parts are *unweighted*; ``"loss"`` is the weighted sum the optimiser sees.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss, FocalLoss
from torch import nn

__all__ = ["DiceBCELoss", "DiceCELoss", "SAM2Loss"]


def _check_weight(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


IGNORED_LOGIT = -1.0e4  # an unannotated pixel's logit: sigmoid 0, BCE/focal 0 against target 0


def _prepare(
    logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate shapes; return logits ``[N, M, H, W]`` and float target ``[N, 1, H, W]``, unannotated
    pixels (``valid`` False) cleared in both."""
    if not isinstance(logits, torch.Tensor) or logits.ndim not in (3, 4):
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must be [N, H, W] or [N, M, H, W], got {shape}")
    if not isinstance(target, torch.Tensor) or target.ndim != 3:
        shape = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__
        raise ValueError(f"target must be [N, H, W], got {shape}")
    if logits.ndim == 3:
        logits = logits[:, None]
    n, _, h, w = logits.shape
    if tuple(target.shape) != (n, h, w):
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits shape {tuple(logits.shape)}"
        )
    target = target.to(dtype=logits.dtype)[:, None]
    if valid is not None:
        if not isinstance(valid, torch.Tensor) or tuple(valid.shape) != (n, h, w):
            shape = tuple(valid.shape) if isinstance(valid, torch.Tensor) else type(valid).__name__
            raise ValueError(f"valid must be [N, H, W] = {(n, h, w)}, got {shape}")
        keep = valid.to(device=logits.device, dtype=torch.bool)[:, None]
        logits = torch.where(keep, logits, logits.new_tensor(IGNORED_LOGIT))
        target = target * keep.to(target.dtype)
    return logits, target


def actual_iou(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU of ``logits > 0`` with the target. logits ``[N, M, H, W]``, target ``[N, 1, H, W]`` -> ``[N, M]``.

    Both empty gives 0 (SAM2: intersection / max(union, 1)).
    """
    pred = logits.detach() > 0
    tgt = target > 0.5
    inter = (pred & tgt).flatten(2).sum(-1).float()
    union = (pred | tgt).flatten(2).sum(-1).float()
    return inter / union.clamp(min=1.0)


class _PerObjectLoss(nn.Module):
    """Base: subclasses give per-mask parts ``[K]`` for K flattened masks; this class selects and reduces."""

    #: name -> weight of the mask parts that take part in the best-candidate selection
    weights: dict[str, float]
    #: weight of the IoU-head regression with multimask logits (0 disables it)
    iou_weight: float = 1.0

    def __init__(self, weights: dict[str, tuple[str, float]], iou_weight: float) -> None:
        """``weights``: part name -> (argument name, value), each checked to be a number >= 0."""
        super().__init__()
        self.weights = {part: _check_weight(arg, value) for part, (arg, value) in weights.items()}
        self.iou_weight = _check_weight("iou_weight", iou_weight)

    def mask_parts(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-mask unweighted parts. logits, target: ``[K, 1, H, W]``; returns ``{name: [K]}``."""
        raise NotImplementedError

    def _best_mask_parts(
        self, logits: torch.Tensor, target: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
        """Mask parts per object for the best candidate.

        Returns (parts of the selected candidate ``{name: [N]}``, all parts ``{name: [N, M]}``,
        selected index ``[N]``).
        """
        n, m, h, w = logits.shape
        flat_logits = logits.reshape(n * m, 1, h, w)
        flat_target = target.expand(n, m, h, w).reshape(n * m, 1, h, w)
        parts = {k: v.reshape(n, m) for k, v in self.mask_parts(flat_logits, flat_target).items()}
        with torch.no_grad():
            total = sum(self.weights[k] * v for k, v in parts.items())
            best = torch.argmin(total, dim=1)
        rows = torch.arange(n, device=logits.device)
        return {k: v[rows, best] for k, v in parts.items()}, parts, best

    def forward(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        iou_pred: torch.Tensor | None = None,
        obj_score: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Weighted loss and its parts.

        With multimask logits (``M > 1``) and ``iou_pred`` given, the IoU head is trained as SAM does
        (part ``iou``: L1 of ``iou_pred`` to the actual IoU of every candidate, weight ``iou_weight``):
        at evaluation the candidate with the highest predicted IoU is kept, so an untrained head would
        pick masks at random. Single-mask logits (box prompts) keep exactly the mask parts.
        ``obj_score`` is accepted for a common signature and unused.

        Args:
            logits: ``[N, H, W]`` or ``[N, M, H, W]`` logits.
            target: ``[N, H, W]`` bool/float.
            iou_pred: ``[N, M]`` predicted IoU per candidate, or None.
            valid: ``[N, H, W]`` bool, False on unannotated pixels (left out), or None.
        """
        logits, target = _prepare(logits, target, valid)
        n, m = logits.shape[:2]
        train_iou = iou_pred is not None and m > 1 and self.iou_weight > 0
        if train_iou and tuple(iou_pred.shape) != (n, m):
            raise ValueError(f"iou_pred must be [N, M] = {(n, m)}, got {tuple(iou_pred.shape)}")
        names = list(self.weights) + (["iou"] if train_iou else [])
        if n == 0:
            zero = logits.sum() * 0.0
            return {"loss": zero, **{k: zero.detach() for k in names}}
        best, _, _ = self._best_mask_parts(logits, target)
        out = {k: v.mean() for k, v in best.items()}
        total = sum(self.weights[k] * out[k] for k in self.weights)
        if train_iou:
            diff = iou_pred.to(logits.dtype) - actual_iou(logits, target)
            out["iou"] = diff.abs().mean()
            total = total + self.iou_weight * out["iou"]
        return {"loss": total, **out}


class DiceBCELoss(_PerObjectLoss):
    """Soft Dice (``monai.losses.DiceLoss(sigmoid=True)``) + binary cross-entropy on logits.

    Parts: ``dice``, ``bce``; ``loss = dice_weight * dice + bce_weight * bce``.

    Args:
        dice_weight: weight of the Dice part (>= 0).
        bce_weight: weight of the BCE part (>= 0).
        pos_weight: optional positive-class weight of the BCE (``BCEWithLogitsLoss(pos_weight=...)``).
        smooth_nr: Dice numerator smoothing.
        smooth_dr: Dice denominator smoothing.
    """

    def __init__(
        self,
        *,
        dice_weight: float = 1.0,
        bce_weight: float = 1.0,
        pos_weight: float | None = None,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        iou_weight: float = 1.0,
    ) -> None:
        super().__init__(
            {"dice": ("dice_weight", dice_weight), "bce": ("bce_weight", bce_weight)}, iou_weight
        )
        if pos_weight is not None:
            _check_weight("pos_weight", pos_weight)
            self.register_buffer("pos_weight", torch.tensor([float(pos_weight)]), persistent=False)
        else:
            self.pos_weight = None
        self.dice = DiceLoss(sigmoid=True, reduction="none", smooth_nr=smooth_nr, smooth_dr=smooth_dr)

    def mask_parts(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        dice = self.dice(logits, target).flatten()
        bce = F.binary_cross_entropy_with_logits(logits, target, pos_weight=self.pos_weight, reduction="none")
        return {"dice": dice, "bce": bce.flatten(1).mean(1)}


class DiceCELoss(_PerObjectLoss):
    """``monai.losses.DiceCELoss(sigmoid=True)`` for binary per-object logits, with its parts exposed.

    For sigmoid outputs MONAI's "CE" part is ``BCEWithLogits``; this class computes the same two terms per
    object (same values as MONAI's loss for single-mask logits, see the tests) so that the multimask
    selection can use them. Parts: ``dice``, ``ce``; ``loss = lambda_dice * dice + lambda_ce * ce``.

    Args:
        lambda_dice: weight of the Dice part (>= 0), MONAI's name.
        lambda_ce: weight of the cross-entropy part (>= 0), MONAI's name.
        squared_pred: use squared predictions in the Dice denominator.
        smooth_nr: Dice numerator smoothing.
        smooth_dr: Dice denominator smoothing.
    """

    def __init__(
        self,
        *,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        squared_pred: bool = False,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        iou_weight: float = 1.0,
    ) -> None:
        super().__init__({"dice": ("lambda_dice", lambda_dice), "ce": ("lambda_ce", lambda_ce)}, iou_weight)
        self.dice = DiceLoss(
            sigmoid=True,
            reduction="none",
            squared_pred=squared_pred,
            smooth_nr=smooth_nr,
            smooth_dr=smooth_dr,
        )

    def mask_parts(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        dice = self.dice(logits, target).flatten()
        ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).mean(1)
        return {"dice": dice, "ce": ce}


class SAM2Loss(_PerObjectLoss):
    """SAM2's training loss (``sam2/training/loss_fns.py`` recipe) on per-object logits.

    ``loss = focal_weight * focal + dice_weight * dice + iou_weight * iou + obj_weight * obj``

    - ``focal``: ``monai.losses.FocalLoss`` (sigmoid, ``alpha``, ``gamma``), mean over pixels per object.
    - ``dice``: ``monai.losses.DiceLoss(sigmoid=True)`` per object (SAM2 smooths with 1).
    - ``iou``: regression (``"mse"`` or ``"l1"``) of ``iou_pred`` to the actual IoU between the binarised
      mask (``logit > 0``) and the target; trained on all ``M`` candidates (mean over them). Skipped
      (part = 0) when ``iou_pred`` is None.
    - ``obj``: BCE of ``obj_score`` against "the target is non-empty"; only when ``obj_score`` is given.
      Then, as in SAM2, focal/dice/iou of objects whose target is empty are zeroed
      (``mask_loss_only_if_present``), so the mask head is not trained on absent objects.

    With multimask logits ``[N, M, H, W]`` focal and dice come from the candidate with the lowest
    ``focal_weight * focal + dice_weight * dice`` (no gradient through the choice).

    Args:
        focal_weight: weight of the focal part (SAM2: 20).
        dice_weight: weight of the Dice part (SAM2: 1).
        iou_weight: weight of the IoU regression part (SAM2: 1).
        obj_weight: weight of the object-score part (SAM2: 1).
        alpha: focal alpha in [0, 1] (SAM2: 0.25).
        gamma: focal gamma >= 0 (SAM2: 2).
        iou_loss: ``"mse"`` or ``"l1"`` (SAM2.1 configs use L1).
        mask_loss_only_if_present: zero mask losses of absent objects when ``obj_score`` is given.
        smooth: Dice numerator/denominator smoothing (SAM2: 1).
    """

    def __init__(
        self,
        *,
        focal_weight: float = 20.0,
        dice_weight: float = 1.0,
        iou_weight: float = 1.0,
        obj_weight: float = 1.0,
        alpha: float = 0.25,
        gamma: float = 2.0,
        iou_loss: str = "mse",
        mask_loss_only_if_present: bool = True,
        smooth: float = 1.0,
    ) -> None:
        super().__init__(
            {"focal": ("focal_weight", focal_weight), "dice": ("dice_weight", dice_weight)}, iou_weight
        )
        self.obj_weight = _check_weight("obj_weight", obj_weight)
        if not 0.0 <= float(alpha) <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha!r}")
        _check_weight("gamma", gamma)
        if iou_loss not in ("mse", "l1"):
            raise ValueError(f"iou_loss must be 'mse' or 'l1', got {iou_loss!r}")
        self.iou_loss = iou_loss
        self.mask_loss_only_if_present = bool(mask_loss_only_if_present)
        _check_weight("smooth", smooth)
        self.focal = FocalLoss(alpha=float(alpha), gamma=float(gamma), use_softmax=False, reduction="none")
        self.dice = DiceLoss(sigmoid=True, reduction="none", smooth_nr=smooth, smooth_dr=smooth)

    def mask_parts(self, logits: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        focal = self.focal(logits, target).flatten(1).mean(1)
        return {"focal": focal, "dice": self.dice(logits, target).flatten()}

    actual_iou = staticmethod(actual_iou)

    def forward(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        iou_pred: torch.Tensor | None = None,
        obj_score: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Weighted SAM2 loss and its unweighted parts ``focal``, ``dice``, ``iou`` (+ ``obj``).

        Args:
            logits: ``[N, H, W]`` or ``[N, M, H, W]`` mask logits.
            target: ``[N, H, W]`` bool/float.
            iou_pred: ``[N, M]`` predicted IoUs or None.
            obj_score: ``[N, 1]`` or ``[N]`` object-score logits or None.
            valid: ``[N, H, W]`` bool, False on unannotated pixels (left out), or None.
        """
        logits, target = _prepare(logits, target, valid)
        n, m = logits.shape[:2]
        if iou_pred is not None and tuple(iou_pred.shape) != (n, m):
            raise ValueError(f"iou_pred must be [N, M] = {(n, m)}, got {tuple(iou_pred.shape)}")
        if obj_score is not None:
            if obj_score.ndim == 1:
                obj_score = obj_score[:, None]
            if tuple(obj_score.shape) != (n, 1):
                raise ValueError(f"obj_score must be [N, 1] = {(n, 1)}, got {tuple(obj_score.shape)}")
        names = ["focal", "dice", "iou"] + (["obj"] if obj_score is not None else [])
        if n == 0:
            zero = logits.sum() * 0.0
            return {"loss": zero, **{k: zero.detach() for k in names}}

        best, _, _ = self._best_mask_parts(logits, target)
        per_obj = dict(best)
        if iou_pred is not None:
            actual = self.actual_iou(logits, target)
            diff = iou_pred.to(logits.dtype) - actual
            per_obj["iou"] = (diff.abs() if self.iou_loss == "l1" else diff.square()).mean(1)
        else:
            per_obj["iou"] = logits.new_zeros(n)

        out: dict[str, torch.Tensor] = {}
        if obj_score is not None:
            present = target.flatten(1).amax(1, keepdim=True).gt(0.5).to(logits.dtype)  # [N, 1]
            out["obj"] = F.binary_cross_entropy_with_logits(obj_score.to(logits.dtype), present)
            if self.mask_loss_only_if_present:
                per_obj = {k: v * present[:, 0] for k, v in per_obj.items()}
        out = {k: per_obj[k].mean() for k in ("focal", "dice", "iou")} | out
        total = self.weights["focal"] * out["focal"] + self.weights["dice"] * out["dice"]
        total = total + self.iou_weight * out["iou"]
        if "obj" in out:
            total = total + self.obj_weight * out["obj"]
        return {"loss": total, **out}
