"""The 2D SAM2 task for the shared engine: one training step and the validation of single images."""

from __future__ import annotations

from pathlib import Path

import torch
from omegaconf import DictConfig

from func_2d.memory_bank import MemoryBank, condition_on_bank, encode_memories, image_keys
from func_2d.sam2_image import decode_objects, encode_images
from medseg.data.batch import ImageBatch
from medseg.data.samples import RunContext
from medseg.train.prompted_image import PromptedImageParts
from medseg.train.task_settings import TaskSettings


class SAM2ImageTask:
    """SAM2 on images with box / click / mask / no prompt, several objects per image, optional memory bank.

    Multimask output (3 masks + IoU head) is used when the prompt is ambiguous (no prompt or a single
    click), as in SAM; the loss picks the best mask and trains the IoU head on all three.
    """

    def __init__(self, ctx: RunContext, settings: TaskSettings, options: DictConfig):
        """``options``: the ``func_2d`` group (multimask_output, threshold, memory bank)."""
        self.parts = PromptedImageParts(ctx, settings, options)  # prompts, loss, class prompts, validation
        self.ctx, self.settings, self.options = ctx, settings, options
        f = options
        self.bank = (
            MemoryBank(int(f.bank_size), int(f.get("bank_k", 4)), float(f.bank_min_iou))
            if f.memory_bank
            else None
        )
        self.train_dataset = ctx.train_samples
        self.collate = ctx.collate

    def prepare_model(self, model) -> None:
        """Automatic mode with several classes: learned class prompts (:class:`PromptedImageParts`)."""
        self.parts.prepare_class_prompts(model)

    # ------------------------------------------------------------------ forward
    def forward(self, model, batch: ImageBatch) -> dict:
        """Per-object outputs: logits [N,M,S,S], ious [N,M], obj_scores [N,1], best [N,S,S]."""
        use_bank = self.bank is not None and len(self.bank) > 0
        feats = encode_images(model, batch.images, add_no_mem_embed=True)
        embed = feats.image_embed
        obj_img = batch.obj_img
        if use_bank:
            embed = condition_on_bank(model, feats, self.bank, obj_img, batch.obj_class)
            obj_img_dec = torch.arange(obj_img.shape[0], device=obj_img.device)
            high_res = [h[obj_img] for h in feats.high_res]
        else:
            obj_img_dec, high_res = obj_img, feats.high_res
        multimask = self.parts.use_multimask(batch)
        low, ious, obj_scores, _ = decode_objects(
            model,
            embed,
            high_res,
            obj_img_dec,
            **self.parts.prompts(batch),
            sparse_prompts=self.parts.sparse_prompts(model, batch),
            multimask_output=multimask,
        )
        out = self.parts.outputs(low, ious, obj_scores, batch.images.shape[-1], multimask)
        best = out["best"]
        if self.bank is not None and model.training:
            self._update_bank(
                model, feats, batch, best.detach(), ious.detach().max(1).values, obj_scores.detach()
            )
        return out

    @torch.no_grad()
    def _update_bank(self, model, feats, batch, best, quality, obj_scores):
        mem, pos = encode_memories(model, feats, batch.obj_img, best[:, None], obj_scores)
        keys = image_keys(feats.image_embed)
        for n in range(mem.shape[0]):
            self.bank.add(mem[n], pos[n], keys[batch.obj_img[n]], int(batch.obj_class[n]), float(quality[n]))

    # ------------------------------------------------------------------ engine hooks
    def training_step(self, model, batch: ImageBatch) -> dict:
        return self.parts.loss(self.forward(model, batch), batch)

    def predict(self, model, batch: ImageBatch) -> torch.Tensor:
        """Per-object logits [N,S,S] (best mask) for evaluation."""
        return self.forward(model, batch)["best"]

    def validate(self, model, *, epoch: int, vis_dir: Path | None):
        return self.parts.validate(self, model, vis_dir=vis_dir)

    def state_dict(self) -> dict:
        return {"bank": self.bank.state_dict()} if self.bank is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.bank is not None and "bank" in state:
            self.bank.load_state_dict(state["bank"])
