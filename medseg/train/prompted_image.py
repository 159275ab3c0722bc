"""What the 2D tasks of the promptable families (SAM2's ``func_2d``, SAM/MedSAM's ``sam_family``) share.

A family's task *composes* :class:`PromptedImageParts` (it does not inherit another family's task): which
prompt tensors of an :class:`~medseg.data.batch.ImageBatch` reach the prompt encoder, SAM's multimask rule,
the best of M masks, the loss with the IoU head, learned class prompts for automatic mode with several
classes (:mod:`medseg.train.class_prompts`) and the validation through the one evaluation protocol. Only
the forward (image encoder + mask decoder) is the family's own.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from medseg.data.batch import ImageBatch
from medseg.eval.evaluation import evaluate_2d

log = logging.getLogger(__name__)


def upsample(low_res: torch.Tensor, size: int) -> torch.Tensor:
    """Low-res logits [N,M,s,s] -> [N,M,size,size] (bilinear, as SAM's and SAM2's predictors do)."""
    return F.interpolate(low_res, size=(size, size), mode="bilinear", align_corners=False)


class PromptedImageParts:
    """Prompts, multimask rule, loss and validation of a promptable 2D task.

    Args:
        ctx: the run's :class:`~medseg.data.samples.RunContext` (``label_names`` decides class prompts).
        settings: the run's :class:`~medseg.train.task_settings.TaskSettings`.
        options: the ``func_2d`` group (``multimask_output``, ``threshold``).
    """

    def __init__(self, ctx, settings, options) -> None:
        if options is None:
            raise ValueError(
                "model.task_2d.options: missing (give options: ${oc.select:func_2d} in the model yaml)"
            )
        self.ctx, self.settings = ctx, settings
        self.multimask = bool(options.multimask_output)
        self.threshold = float(options.threshold)
        self.prompt_kind = settings.prompt.kind
        self.loss_fn = settings.loss_fn
        self.classes = sorted(int(k) for k in ctx.label_names if int(k) > 0)
        self.class_prompts = self.prompt_kind.automatic and len(self.classes) > 1

    @classmethod
    def for_inference(
        cls, kind, *, class_prompts: bool = False, multimask: bool = True
    ) -> PromptedImageParts:
        """The parts a family's image predictor needs outside a run (no loss, no dataset): prompts as
        ``kind`` says, learned class prompts when the model has them and ``kind`` is automatic."""
        parts = cls.__new__(cls)
        parts.ctx = parts.settings = parts.loss_fn = None
        parts.multimask, parts.threshold, parts.prompt_kind = bool(multimask), 0.0, kind
        parts.classes, parts.class_prompts = [], bool(class_prompts and kind.automatic)
        return parts

    def prompts(self, batch: ImageBatch) -> dict:
        """The prompt tensors this run uses (ImageBatch always carries all of them, zero when unused)."""
        kind = self.prompt_kind
        return {
            "boxes": batch.boxes if kind.box else None,
            "points": batch.points if batch.points.shape[1] else None,
            "point_labels": batch.point_labels if batch.points.shape[1] else None,
            "mask_inputs": batch.mask_prompts[:, None] if kind.mask else None,
        }

    def use_multimask(self, batch: ImageBatch) -> bool:
        """SAM's rule: three masks when the prompt is ambiguous (no prompt or a single click)."""
        if not self.multimask or self.prompt_kind.unambiguous:
            return False
        n_clicks = (
            int((batch.point_labels >= 0).sum(1).max())
            if batch.points.shape[1] and batch.points.shape[0]
            else 0
        )
        return n_clicks <= 1

    def sparse_prompts(self, model, batch: ImageBatch) -> torch.Tensor | None:
        """Learned class tokens ``[N,1,C]`` in automatic mode with several classes, else None."""
        return model.class_prompts(batch.obj_class) if self.class_prompts else None

    @staticmethod
    def outputs(low: torch.Tensor, ious: torch.Tensor, obj_scores, size: int, multimask: bool) -> dict:
        """Per-object outputs: logits [N,M,S,S], ious [N,M], obj_scores [N,1] or None, best [N,S,S]."""
        logits = upsample(low, size)
        best = logits[torch.arange(logits.shape[0]), ious.argmax(1)] if multimask else logits[:, 0]
        return {"logits": logits, "ious": ious, "obj_scores": obj_scores, "best": best}

    def loss(self, out: dict, batch: ImageBatch) -> dict:
        """The configured loss on the best-of-M masks, the IoU head and (SAM2) the object score."""
        extra = {} if batch.valid is None else {"valid": batch.valid}  # unannotated pixels left out
        return self.loss_fn(
            out["logits"], batch.masks, iou_pred=out["ious"], obj_score=out["obj_scores"], **extra
        )

    def prepare_class_prompts(self, model) -> None:
        """Automatic mode with several classes: the model needs one learned prompt per class; added for
        training, required (from the checkpoint) for evaluation."""
        if not self.class_prompts:
            return
        names = ", ".join(str(self.ctx.label_names[k]) for k in self.classes)
        have = getattr(model, "class_prompts", None)
        if have is not None:
            if have.max_id < max(self.classes):
                raise ValueError(
                    f"model.checkpoint: its class prompts cover ids 1..{have.max_id} but the dataset has "
                    f"ids {self.classes} ({names})"
                )
            return
        if not self.settings.train:
            raise ValueError(
                f"prompt=none with {len(self.classes)} classes ({names}) needs class prompts learned in "
                "training: model.checkpoint has none (train with prompt=none first, or use prompt=box|click)"
            )
        from medseg.train.class_prompts import attach_class_prompts

        attach_class_prompts(model, max(self.classes))
        log.info("automatic mode, %d classes (%s): one learned class prompt each", len(self.classes), names)

    def validate(self, task, model, *, vis_dir: Path | None):
        """The one evaluation protocol over ``task.predict`` (:func:`~medseg.eval.evaluation.evaluate_2d`)."""
        return evaluate_2d(task, model, self.ctx, self.settings, vis_dir=vis_dir, threshold=self.threshold)
