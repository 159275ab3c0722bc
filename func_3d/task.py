"""The 3D SAM2 task for the shared engine: clips of consecutive slices trained end to end through the
memory attention, and whole-volume validation (key-slice prompts, propagation both ways, volumetric
Dice/HD95 in mm on the input grid)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from func_3d.propagate import propagate_clips
from func_3d.volume import frame_prompts, prompts_from_label, segment_volume
from medseg.data.batch import to_device
from medseg.data.prompts import PromptConfig, prompts_3d
from medseg.data.samples import seed_augment
from medseg.data.transforms import volume_window
from medseg.data.volume_prompts import VolumePrompts
from medseg.eval.evaluation import CaseResult, run_evaluation, shard_of
from medseg.eval.viz import panel_grid, picture_or_warning, save_png
from medseg.train.task_settings import TaskSettings


@dataclass
class ClipBatch:
    """B clips of slices. images: per clip ``[T_b,3,S,S]`` (T_b < video_length only for volumes shorter
    than a clip); masks: per clip ``[T_b,O_b,S,S]`` (O varies per clip); prompts: per clip
    ``{frame: FramePrompts}``; obj_ids: per clip the label id of each object; valid: None, or per clip
    ``[T_b,S,S]`` bool, False on unannotated voxels (nnU-Net ``ignore``), which the loss leaves out."""

    images: list[torch.Tensor]
    masks: list[torch.Tensor]
    prompts: list[dict]
    obj_ids: list[list[int]]
    case_ids: list[str]
    valid: list[torch.Tensor] | None = None

    def to(self, device):
        return ClipBatch(
            [x.to(device, non_blocking=True) for x in self.images],
            [m.to(device, non_blocking=True) for m in self.masks],
            [{t: to_device(fp, device) for t, fp in p.items()} for p in self.prompts],
            self.obj_ids,
            self.case_ids,
            None if self.valid is None else [v.to(device, non_blocking=True) for v in self.valid],
        )

    def pin_memory(self):
        return ClipBatch(
            [x.pin_memory() for x in self.images],
            [m.pin_memory() for m in self.masks],
            self.prompts,
            self.obj_ids,
            self.case_ids,
            None if self.valid is None else [v.pin_memory() for v in self.valid],
        )


class ClipSamples:
    """Training clips: ``video_length`` consecutive slices of a volume at a random position that holds the
    chosen objects (up to ``max_objects``), prompts on each object's key slice within the clip (plus every
    ``prompt.freq``-th slice), optionally reversed in time."""

    def __init__(self, volumes, transform, options, prompt: PromptConfig):
        """``options``: the ``func_3d`` group (video_length, max_objects, reverse_prob)."""
        self.volumes, self.transform = volumes, transform
        self.T = int(options.video_length)
        self.max_objects = int(options.max_objects)
        self.reverse_prob = float(options.reverse_prob)
        self.prompt_cfg = prompt
        if self.T < 1:
            raise ValueError(f"func_3d.video_length={self.T} must be >= 1")
        self._windows: dict[int, dict | None] = {}  # whole-volume intensity statistics per case

    def __len__(self) -> int:
        return len(self.volumes)

    def get(self, i: int, rng: np.random.Generator) -> dict:
        case = self.volumes[i]
        label = np.asarray(case["label"])
        D = label.shape[0]
        ignore = case.get("ignore_label")  # nnU-Net's unannotated voxels: no object, no loss
        present = [int(v) for v in np.unique(label) if v > 0 and v != ignore]
        if not present:
            raise ValueError(f"{case['case_id']}: no labelled voxel in this training volume")
        chosen = sorted(rng.choice(present, size=min(len(present), self.max_objects), replace=False).tolist())
        zs = np.flatnonzero(np.isin(label, chosen).reshape(D, -1).any(1))
        center = int(rng.choice(zs))
        T = min(self.T, D)
        start = int(np.clip(center - rng.integers(0, T), 0, D - T))
        sl = slice(start, start + T)
        if i not in self._windows:
            self._windows[i] = volume_window(case["image"], self.transform.intensity)
        clip = dict(
            case, image=np.asarray(case["image"])[sl], label=label[sl], intensity_window=self._windows[i]
        )
        if self.reverse_prob and rng.random() < self.reverse_prob:
            clip["image"], clip["label"] = clip["image"][::-1].copy(), clip["label"][::-1].copy()
        seed_augment(self.transform, rng)
        s = self.transform(clip)
        lab = s["label"].numpy()
        ids = [k for k in chosen if (lab == k).any()]
        vp_by_id = prompts_3d(lab, ids, self.prompt_cfg, rng)
        ids = [k for k in ids if k in vp_by_id]
        vp = VolumePrompts({o: vp_by_id[k] for o, k in enumerate(ids)}, ids)
        masks = (
            torch.stack([s["label"] == k for k in ids], 1)
            if ids
            else torch.zeros(T, 0, *lab.shape[1:], dtype=torch.bool)
        )
        return {
            "image": s["image"],
            "masks": masks,
            "prompts": frame_prompts(vp, self.prompt_cfg.kind, lab.shape[-1]),
            "obj_ids": ids,
            "case_id": str(case["case_id"]),
            "valid": None if ignore is None else s["label"] != int(ignore),
        }


def collate_clips(samples: list[dict]) -> ClipBatch:
    valid = None
    if any(s.get("valid") is not None for s in samples):
        valid = [
            s["valid"]
            if s.get("valid") is not None
            else torch.ones((s["masks"].shape[0], *s["masks"].shape[2:]), dtype=torch.bool)
            for s in samples
        ]
    return ClipBatch(
        [s["image"] for s in samples],
        [s["masks"] for s in samples],
        [s["prompts"] for s in samples],
        [s["obj_ids"] for s in samples],
        [s["case_id"] for s in samples],
        valid,
    )


class SAM2VideoTask:
    """Train SAM2's propagation end to end on clips; validate on whole volumes."""

    def __init__(self, ctx, settings: TaskSettings, options):
        """``options``: the ``func_3d`` group (clips, propagation, threshold)."""
        if options is None:
            raise ValueError(
                "model.task_3d.options: missing (give options: ${oc.select:func_3d} in the model yaml)"
            )
        self.ctx, self.settings, self.options = ctx, settings, options
        refuse_automatic_3d(settings.prompt)
        self.loss_fn = settings.loss_fn
        self.train_dataset = (
            ClipSamples(ctx.train_cases, ctx.train_transform, options, settings.prompt)
            if ctx.train_cases
            else None
        )
        self.collate = collate_clips
        self.checkpointing = settings.activation_checkpointing
        self.batch_clips = bool(options.get("batch_clips", True))
        self.encoder_chunk = int(options.get("encoder_chunk", 32))

    def training_step(self, model, batch: ClipBatch) -> dict:
        """Loss over every frame and object of every clip. With ``func_3d.batch_clips`` the clips of the
        batch (those of equal length) run as one propagation: one image-encoder pass over all their
        frames and, on each step, all objects of all clips batched; otherwise clip after clip."""
        S = batch.images[0].shape[-1]
        todo = [b for b in range(len(batch.images)) if batch.obj_ids[b]]
        if not todo:  # a zero loss that still reaches every trainable parameter (DDP waits for each)
            return {"loss": sum((p * 0.0).sum() for p in model.parameters() if p.requires_grad)}
        groups: dict[int, list[int]] = {}
        for b in todo:
            key = batch.images[b].shape[0] if self.batch_clips else -1 - b
            groups.setdefault(key, []).append(b)
        logits, targets, ious, scores, valid = [], [], [], [], []
        for members in groups.values():
            outs = propagate_clips(
                model,
                torch.stack([batch.images[b] for b in members]),
                [batch.prompts[b] for b in members],
                [len(batch.obj_ids[b]) for b in members],
                both_directions=True,
                train=True,
                chunk=self.encoder_chunk,
                activation_checkpointing=self.checkpointing,
                return_logits=False,
                return_multimask=True,
            )
            for b, out in zip(members, outs):
                v = out.valid  # [T,O]
                mm = out.multimask_logits[v]  # [N,M,s,s]
                logits.append(F.interpolate(mm, size=(S, S), mode="bilinear", align_corners=False))
                targets.append(batch.masks[b][v])
                ious.append(out.ious[v])
                scores.append(out.object_score_logits[v])
                if batch.valid is not None:  # unannotated voxels of each object's frame
                    valid.append(batch.valid[b][:, None].expand_as(batch.masks[b])[v])
        return self.loss_fn(
            torch.cat(logits),
            torch.cat(targets),
            iou_pred=torch.cat(ious),
            obj_score=torch.cat(scores),
            **({"valid": torch.cat(valid)} if valid else {}),
        )

    def validate(self, model, *, epoch: int, vis_dir: Path | None):
        return evaluate_volumes(model, self.ctx, self.settings, self.options, vis_dir=vis_dir)


def refuse_automatic_3d(prompt_cfg) -> None:
    """One clear line instead of a failure deep inside propagation: 3D needs a prompt on a key slice."""
    if PromptConfig.from_cfg(prompt_cfg).kind.automatic:
        raise ValueError(
            "prompt=none (automatic mode) is 2D only: 3D propagation starts from a prompt on a key slice; "
            "use prompt=box, prompt=click or prompt=mask (or train_2d.py for automatic mode)"
        )


@torch.no_grad()
def evaluate_volumes(model, ctx, settings, options, *, vis_dir: Path | None = None, cases=None):
    """Whole-volume validation under the evaluation protocol (:mod:`medseg.eval.evaluation`): per case x organ
    volumetric Dice, IoU and HD95 on the input grid. ``settings``: the run's
    :class:`~medseg.train.task_settings.TaskSettings`; ``options``: the ``func_3d`` group."""
    cases = ctx.val_cases if cases is None else cases
    if cases is None or len(cases) == 0:
        return {}, [], {}
    protocol = settings.protocol
    refuse_automatic_3d(protocol.prompt)
    classes = {int(k): v for k, v in ctx.label_names.items() if int(k) > 0}
    f3 = options
    n_vis = 4 if settings.vis_max_cases is None else int(settings.vis_max_cases)

    def evaluate_case(i: int) -> CaseResult:
        raw = cases[i]
        # layouts that declare no organ names (npz) name each case's own ids (label_<id>)
        case_classes = classes or {int(k): v for k, v in (raw.get("label_names") or {}).items() if int(k) > 0}
        s = ctx.val_transform(raw)
        vp = volume_prompts(s["label"].numpy(), case_classes, protocol, str(raw["case_id"]))
        label = np.asarray(raw["label"])
        pred = segment_volume(
            model,
            s["image"],
            vp,
            protocol.prompt.kind,
            label.shape[1:],
            threshold=float(f3.threshold),
            offload=bool(f3.offload),
            keep_largest=bool(f3.get("largest_component", False)),
            exact=bool(f3.get("exact_parity", False)),
        )
        images = {}
        if vis_dir is not None and i < n_vis:

            def draw():
                grids = volume_pictures(raw, pred, ctx.val_transform, vp, names=case_classes)
                for z, g in grids.items():
                    save_png(g, Path(vis_dir) / f"{raw['case_id']}_z{z:03d}.png")
                return grids

            for z, g in (picture_or_warning(draw, f"{vis_dir}/{raw['case_id']}_z*.png") or {}).items():
                images[f"val_images/{raw['case_id']}_z{z}"] = g
        spacing = tuple(float(x) for x in raw["spacing"])
        unit = raw.get("spacing_unit", "mm")  # "voxel" for BTCV slices: HD95 not in mm
        direction = getattr(raw.get("geometry"), "direction", None)  # sheared grids: physical HD95
        return CaseResult(
            str(raw["case_id"]),
            pred,
            label,
            spacing,
            case_classes,
            images,
            spacing_unit=unit,
            direction=direction,
            ignore_label=raw.get("ignore_label"),
        )

    return run_evaluation(
        len(cases),
        evaluate_case,
        protocol,
        limit=settings.limit_val_batches,
        progress=settings.progress_bar,
        desc="validate 3D",
        shard=shard_of(ctx),  # several processes: each scores its share, rank 0 gets every row
    )


def volume_prompts(label_s: np.ndarray, classes, protocol, case_id: str) -> VolumePrompts:
    """The protocol's prompts of one resized (D,S,S) reference: each organ present gets its key-slice
    prompt (or every ``prompt.freq``-th slice), exact unless ``eval_prompt`` asks for jitter."""
    ids = [k for k in classes if (label_s == k).any()]
    return prompts_from_label(
        label_s, ids, protocol.prompt_cfg(), mode=protocol.mode_3d, rng=protocol.rng(case_id)
    )


def volume_pictures(
    raw: dict, pred: np.ndarray, transform, vp: VolumePrompts | None = None, n: int = 3, names=None
) -> dict[int, np.ndarray]:
    """image | reference | prediction | prompt on the key slices (or evenly spaced slices without
    labels), at the slice's own resolution, with a legend of organ colours (``names`` {id: name},
    else the case's ``label_names``, else the ids)."""
    from medseg.data.transforms import apply_intensity

    names = names or {int(k): str(v) for k, v in (raw.get("label_names") or {}).items() if int(k) > 0}
    ids = np.unique(pred)
    names = {int(i): names.get(int(i), f"label {int(i)}") for i in ids if i > 0} | dict(names)

    image = np.asarray(raw["image"])
    label = raw.get("label")
    D = image.shape[0]
    zs = sorted({z for per in (vp.per_object.values() if vp else []) for z in per})
    if not zs:
        fg = np.flatnonzero(pred.reshape(D, -1).any(1))
        zs = list(fg) if len(fg) else list(range(D))
    zs = [zs[int(j)] for j in np.linspace(0, len(zs) - 1, min(n, len(zs)))]
    S = transform.image_size
    sy, sx = image.shape[1] / S, image.shape[2] / S
    out = {}
    for z in zs:
        x = apply_intensity(image[z], transform.intensity)
        gt = np.asarray(label[z]) if label is not None else None
        boxes = None
        if vp is not None:
            bs = [
                p["box"] * np.array([sx, sy, sx, sy])
                for per in vp.per_object.values()
                for zz, p in per.items()
                if zz == z and np.any(p["box"])
            ]
            boxes = np.stack(bs) if bs else None
        out[int(z)] = panel_grid(x if x.ndim == 2 else x.mean(-1), gt, pred[z], boxes=boxes, names=names)
    return out
