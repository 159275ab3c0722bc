"""The 2D SAM2 task for the shared engine: one training step and the validation of single images."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig

from func_2d.memory_bank import MemoryBank, condition_on_bank, encode_memories, image_keys
from func_2d.sam2_image import decode_objects, encode_images, upsample
from medseg.data.batch import ImageBatch
from medseg.data.samples import RunContext
from medseg.eval.evaluation import evaluate_2d
from medseg.train.task_settings import TaskSettings

log = logging.getLogger(__name__)


def enable_activation_checkpointing(model, settings) -> int:
    """``trainer.activation_checkpointing`` (training only): Hiera blocks recomputed in the backward pass."""
    if not (settings.activation_checkpointing and settings.train):
        return 0
    from sam2_train.activation import set_activation_checkpointing

    n = set_activation_checkpointing(model, True)
    log.info("activation checkpointing: %d image-encoder blocks recomputed in the backward pass", n)
    return n


class SAM2ImageTask:
    """SAM2 on images with box / click / mask / no prompt, several objects per image, optional memory bank.

    Multimask output (3 masks + IoU head) is used when the prompt is ambiguous (no prompt or a single
    click), as in SAM; the loss picks the best mask and trains the IoU head on all three.
    """

    def __init__(self, ctx: RunContext, settings: TaskSettings, options: DictConfig):
        """``options``: the ``func_2d`` group (multimask_output, threshold, memory bank)."""
        if options is None:
            raise ValueError(
                "model.task_2d.options: missing (give options: ${oc.select:func_2d} in the model yaml)"
            )
        self.ctx, self.settings, self.options = ctx, settings, options
        f = options
        self.multimask = bool(f.multimask_output)
        self.threshold = float(f.threshold)
        self.prompt_kind = settings.prompt.kind
        self.loss_fn = settings.loss_fn
        self.bank = (
            MemoryBank(int(f.bank_size), int(f.get("bank_k", 4)), float(f.bank_min_iou))
            if f.memory_bank
            else None
        )
        self.train_dataset = ctx.train_samples
        self.collate = ctx.collate
        self.classes = sorted(int(k) for k in ctx.label_names if int(k) > 0)
        self.class_prompts = self.prompt_kind.automatic and len(self.classes) > 1

    def prepare_model(self, model) -> None:
        """Automatic mode with several classes: the model needs one learned prompt per class
        (:mod:`sam2_train.class_prompts`); added for training, required (from the checkpoint) for evaluation.
        Also switches on activation checkpointing of the image encoder (``trainer.activation_checkpointing``)."""
        enable_activation_checkpointing(model, self.settings)
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
        from sam2_train.class_prompts import attach_class_prompts

        attach_class_prompts(model, max(self.classes))
        log.info("automatic mode, %d classes (%s): one learned class prompt each", len(self.classes), names)

    # ------------------------------------------------------------------ forward
    def _prompts(self, batch: ImageBatch) -> dict:
        """The prompt tensors this run uses (ImageBatch always carries all of them, zero when unused)."""
        kind = self.prompt_kind
        return {
            "boxes": batch.boxes if kind.box else None,
            "points": batch.points if batch.points.shape[1] else None,
            "point_labels": batch.point_labels if batch.points.shape[1] else None,
            "mask_inputs": batch.mask_prompts[:, None] if kind.mask else None,
        }

    def _use_multimask(self, batch: ImageBatch) -> bool:
        """SAM's rule: three masks when the prompt is ambiguous (no prompt or a single click)."""
        if not self.multimask or self.prompt_kind.unambiguous:
            return False
        n_clicks = (
            int((batch.point_labels >= 0).sum(1).max())
            if batch.points.shape[1] and batch.points.shape[0]
            else 0
        )
        return n_clicks <= 1

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
        multimask = self._use_multimask(batch)
        sparse = model.class_prompts(batch.obj_class) if self.class_prompts else None
        low, ious, obj_scores, _ = decode_objects(
            model,
            embed,
            high_res,
            obj_img_dec,
            **self._prompts(batch),
            sparse_prompts=sparse,
            multimask_output=multimask,
        )
        logits = upsample(low, batch.images.shape[-1])
        best = logits[torch.arange(logits.shape[0]), ious.argmax(1)] if multimask else logits[:, 0]
        out = {"logits": logits, "ious": ious, "obj_scores": obj_scores, "best": best}
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
        out = self.forward(model, batch)
        extra = {} if batch.valid is None else {"valid": batch.valid}  # unannotated pixels left out
        return self.loss_fn(
            out["logits"], batch.masks, iou_pred=out["ious"], obj_score=out["obj_scores"], **extra
        )

    def predict(self, model, batch: ImageBatch) -> torch.Tensor:
        """Per-object logits [N,S,S] (best mask) for evaluation."""
        return self.forward(model, batch)["best"]

    def validate(self, model, *, epoch: int, vis_dir: Path | None):
        return evaluate_2d(self, model, self.ctx, self.settings, vis_dir=vis_dir, threshold=self.threshold)

    def state_dict(self) -> dict:
        return {"bank": self.bank.state_dict()} if self.bank is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.bank is not None and "bank" in state:
            self.bank.load_state_dict(state["bank"])
