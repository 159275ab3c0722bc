"""The 2D task of the SAM family (SAM, MedSAM) for the shared engine.

Same contract, prompts, loss handling and evaluation as SAM2's :class:`func_2d.task.SAM2ImageTask`
(box / click / mask / no prompt; three masks + IoU head on ambiguous prompts; the loss takes the best
candidate and trains the IoU head; learned class prompts in automatic mode with several classes); only
the forward differs: SAM's encoder gives one embedding per image
and its decoder has no object-score head and no memory.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig

from func_2d.sam2_image import upsample
from func_2d.task import SAM2ImageTask
from medseg.data.batch import ImageBatch
from medseg.data.samples import RunContext
from medseg.train.task_settings import TaskSettings


class SamImageTask(SAM2ImageTask):
    """SAM / MedSAM on images: per-object logits from :class:`sam_family.model.SamNet`."""

    def __init__(self, ctx: RunContext, settings: TaskSettings, options: DictConfig):
        if options is not None and options.get("memory_bank", False):
            raise ValueError(
                "func_2d.memory_bank=true: SAM/MedSAM have no memory modules; use a SAM2 model or "
                "func_2d.memory_bank=false"
            )
        super().__init__(ctx, settings, options)

    def forward(self, model, batch: ImageBatch) -> dict:
        """Per-object outputs: logits [N,M,S,S], ious [N,M], obj_scores None, best [N,S,S]."""
        embed = model.encode(batch.images)
        multimask = self._use_multimask(batch)
        sparse = model.class_prompts(batch.obj_class) if self.class_prompts else None
        low, ious = model.decode(
            embed, batch.obj_img, **self._prompts(batch), sparse_prompts=sparse, multimask_output=multimask
        )
        logits = upsample(low, batch.images.shape[-1])
        best = logits[torch.arange(logits.shape[0]), ious.argmax(1)] if multimask else logits[:, 0]
        return {"logits": logits, "ious": ious, "obj_scores": None, "best": best}
