"""The timed training steps, ours and bare, as closures ``step(batch)``.

*Ours* is what ``medseg/train/engine.py`` runs: the task's ``training_step`` + backward + the engine's optimizer
step. *Bare* is the same computation written directly against ``SAM2Base`` with a plain focal+dice loss.
Both record their forward+backward time with :meth:`bench.harness.Bench.mark` before the optimizer step.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from bench.harness import Bench


def plain_focal_dice(logits, target, alpha=0.25, gamma=2.0):
    """Bare SAM2-style loss: 20 x sigmoid focal + dice, per object, averaged (logits/target [N,S,S])."""
    t = target.float()
    p = logits.sigmoid()
    ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    focal = (ce * (1 - p_t) ** gamma * (alpha * t + (1 - alpha) * (1 - t))).flatten(1).mean(1)
    inter = (p * t).flatten(1).sum(1)
    dice = 1 - (2 * inter + 1) / (p.flatten(1).sum(1) + t.flatten(1).sum(1) + 1)
    return (20 * focal + dice).mean()


def opt_step(model, opt):
    """The optimizer side of the engine's step (medseg/train/engine.py _optimizer_step), shared by ours and bare."""
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)


def _bare_adamw(model):
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.01)


def engine_step(bench: Bench, task, model, opt):
    """One step as medseg/train/engine.py runs it: ``task.training_step`` + backward + the optimizer step
    (precision: whatever ``bench.timed()`` sets, the same for ours and bare)."""
    device = bench.device

    def step(batch):
        t0 = time.perf_counter()
        parts = task.training_step(model, batch.to(device))
        parts["loss"].backward()
        _ = {k: float(v.detach()) for k, v in parts.items()}
        bench.mark("ours", t0)
        opt_step(model, opt)

    return step


def image_task(cfg):
    """``SAM2ImageTask`` of ``cfg`` with one foreground class (the discs)."""
    from medseg.run.app import build_task

    return build_task(
        cfg, SimpleNamespace(train_samples=None, collate=None, label_names={1: "object"}), "task_2d"
    )


def video_task(cfg, *, batch_clips: bool | None = None, checkpointing: bool | None = None):
    """``SAM2VideoTask`` of ``cfg``; ``batch_clips`` / ``checkpointing`` override the config's when given."""
    from medseg.run.app import build_task

    task = build_task(cfg, SimpleNamespace(train_cases=None, train_transform=None), "task_3d")
    if batch_clips is not None:
        task.batch_clips = batch_clips
    if checkpointing is not None:
        task.checkpointing = checkpointing
    return task


def ours_2d(bench: Bench, cfg, model):
    """Our full 2D step as medseg/train/engine.py runs it: SAM2ImageTask.training_step + backward + optimizer step."""
    from medseg.train.optim import build_optimizer

    return engine_step(bench, image_task(cfg), model, build_optimizer(cfg.optim, model))


def ours_3d(bench: Bench, cfg, model, *, batch_clips: bool = True, checkpointing: bool = False):
    """Our full 3D step: SAM2VideoTask.training_step + backward + optimizer step."""
    from medseg.train.optim import build_optimizer

    task = video_task(cfg, batch_clips=batch_clips, checkpointing=checkpointing)
    return engine_step(bench, task, model, build_optimizer(cfg.optim, model))


def bare_2d(bench: Bench, model):
    """The same computation written directly against SAM2Base, with a plain focal+dice loss."""
    device = bench.device
    opt = _bare_adamw(model)

    def step(batch):
        t0 = time.perf_counter()
        images, boxes, masks = batch.images.to(device), batch.boxes.to(device), batch.masks.to(device)
        B, S = images.shape[0], images.shape[-1]
        out = model.forward_image(images)
        _, feats, _, sizes = model._prepare_backbone_features(out)
        feats[-1] = feats[-1] + model.no_mem_embed
        maps = [f.permute(1, 2, 0).reshape(B, -1, *s) for f, s in zip(feats, sizes)]
        coords = boxes.reshape(B, 2, 2)
        labels = torch.tensor([[2, 3]], dtype=torch.int32, device=device).repeat(B, 1)
        sparse, dense = model.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        low, ious, _, obj = model.sam_mask_decoder(
            image_embeddings=maps[-1],
            image_pe=model.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
            repeat_image=False,
            high_res_features=maps[:-1],
        )
        logits = F.interpolate(low, size=(S, S), mode="bilinear", align_corners=False)[:, 0]
        loss = plain_focal_dice(logits, masks)
        loss.backward()
        float(loss.detach())
        bench.mark("bare", t0)
        opt_step(model, opt)

    return step


def bare_3d(bench: Bench, model):
    """SAM2Base.track_step frame by frame with gradients: frame 0 prompted (cond frame), loss on every frame."""
    device = bench.device
    opt = _bare_adamw(model)

    def step(batch):
        t0 = time.perf_counter()
        images = batch.images[0].to(device)  # [T,3,S,S]
        masks = batch.masks[0].to(device)  # [T,O,S,S]
        boxes = batch.prompts[0][0].boxes.to(device)
        T, O = masks.shape[:2]
        out = model.forward_image(images)
        _, feats, pos, sizes = model._prepare_backbone_features(out)  # [HW, T, C]
        output_dict = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        point_inputs = {
            "point_coords": boxes.reshape(O, 2, 2),
            "point_labels": torch.tensor([[2, 3]], dtype=torch.int32, device=device).repeat(O, 1),
        }
        loss = 0.0
        for t in range(T):
            cur = model.track_step(
                frame_idx=t,
                is_init_cond_frame=t == 0,
                current_vision_feats=[f[:, t : t + 1].expand(-1, O, -1) for f in feats],
                current_vision_pos_embeds=[p[:, t : t + 1].expand(-1, O, -1) for p in pos],
                feat_sizes=sizes,
                point_inputs=point_inputs if t == 0 else None,
                mask_inputs=None,
                output_dict=output_dict,
                num_frames=T,
            )
            output_dict["cond_frame_outputs" if t == 0 else "non_cond_frame_outputs"][t] = cur
            loss = loss + plain_focal_dice(cur["pred_masks_high_res"][:, 0], masks[t])
        loss = loss / T
        loss.backward()
        float(loss.detach())
        bench.mark("bare", t0)
        opt_step(model, opt)

    return step
