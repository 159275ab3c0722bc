"""The 2D task of the SAM family (SAM, MedSAM) for the shared engine.

It composes the parts every promptable 2D task shares (:class:`medseg.train.prompted_image.PromptedImageParts`:
box / click / mask / no prompt; three masks + IoU head on ambiguous prompts; the loss takes the best
candidate and trains the IoU head; learned class prompts in automatic mode with several classes; the one
evaluation protocol); only the forward is its own: SAM's encoder gives one embedding per image and its
decoder has no object-score head and no memory.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from medseg.data.batch import ImageBatch
from medseg.data.samples import RunContext
from medseg.train.prompted_image import PromptedImageParts
from medseg.train.task_settings import TaskSettings
from sam_family.family import sam_forward


class SamImageTask:
    """SAM / MedSAM on images: per-object logits from :class:`sam_family.model.SamNet`."""

    def __init__(self, ctx: RunContext, settings: TaskSettings, options: DictConfig):
        """``options``: the ``func_2d`` group (multimask_output, threshold; no memory bank)."""
        if options is not None and options.get("memory_bank", False):
            raise ValueError(
                "func_2d.memory_bank=true: SAM/MedSAM have no memory modules; use a SAM2 model or "
                "func_2d.memory_bank=false"
            )
        self.parts = PromptedImageParts(ctx, settings, options)
        self.ctx, self.settings, self.options = ctx, settings, options
        self.train_dataset = ctx.train_samples
        self.collate = ctx.collate

    def prepare_model(self, model) -> None:
        """Automatic mode with several classes: learned class prompts (:class:`PromptedImageParts`)."""
        self.parts.prepare_class_prompts(model)

    def forward(self, model, batch: ImageBatch) -> dict:
        """Per-object outputs: logits [N,M,S,S], ious [N,M], obj_scores None, best [N,S,S]."""
        return sam_forward(model, batch, self.parts)

    def training_step(self, model, batch: ImageBatch) -> dict:
        return self.parts.loss(self.forward(model, batch), batch)

    def predict(self, model, batch: ImageBatch):
        """Per-object logits [N,S,S] (best mask) for evaluation."""
        return self.forward(model, batch)["best"]

    def validate(self, model, *, epoch: int, vis_dir: Path | None):
        return self.parts.validate(self, model, vis_dir=vis_dir)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
