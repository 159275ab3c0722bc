"""The one evaluation protocol of the suite, used by 2D validation, 3D validation, ``train=false`` and
``inference_3d.py``.

Protocol (:class:`EvalProtocol`, recorded in ``run_summary.json`` and in every ``metrics.csv`` /
``val_cases.csv`` row as ``eval_protocol``):

- Prompts come from the reference mask and never depend on the run's ``seed``: a *box* is the tight
  box of the object (corners on its extreme pixels); the first positive *click* is the object pixel
  farthest from its boundary (the maximum of the distance transform), further clicks and negative
  clicks are drawn from a generator seeded by ``(eval_prompt.seed, case id)``; a *mask* prompt is the
  reference mask. In 3D the prompt sits on each organ's key slice (``prompt.key_slice``; or every
  ``prompt.freq``-th slice with ``func_3d.val_prompt=freq``) and is propagated both ways.
- ``eval_prompt.jitter_px`` / ``jitter_frac`` (0 by default) perturb the boxes for robustness studies,
  from the same fixed generator, so two runs of the protocol give the same prompts.
- Prompted modes predict the objects present in the reference (a prompt needs an object). The automatic
  mode (``prompt=none``) predicts every *declared* class of the dataset; the reference never decides what
  is predicted, and a class predicted where the reference has none counts as a false positive.
- Scores: :mod:`medseg.eval.metrics` on the image's own grid (logits resized bilinearly, as SAM2's predictors
  do), one row per case x class, empty-mask rule as documented there.

Training keeps its own (jittered, seeded) prompts; only evaluation uses this protocol.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from medseg.data.batch import collate_sam2_2d
from medseg.data.prompts import PromptConfig
from medseg.eval.metrics import MetricAccumulator, score_case
from medseg.eval.viz import panel_grid, picture_or_warning, save_png

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalProtocol:
    """How every score of a run is computed (see the module docstring)."""

    prompt: PromptConfig
    jitter_px: float = 0.0
    jitter_frac: float = 0.0
    seed: int = 0
    mode_3d: str = "key_slice"  # key_slice | freq
    threshold: float = 0.0

    @classmethod
    def from_cfg(cls, cfg: Any, mode: str = "2d") -> EvalProtocol:
        """From a composed run config (:class:`medseg.schema.TrainConfig` / ``Inference3DConfig``): ``prompt``,
        ``eval_prompt`` (jitter_px, jitter_frac, seed), ``func_3d.val_prompt`` and the threshold of
        ``func_2d`` (``mode="2d"``) or ``func_3d`` (``"3d"``). Ranges were checked with the config."""
        ep = cfg.eval_prompt
        return cls(
            prompt=PromptConfig.from_cfg(cfg.prompt),
            jitter_px=float(ep.jitter_px),
            jitter_frac=float(ep.jitter_frac),
            seed=int(ep.seed),
            mode_3d=str(cfg.func_3d.val_prompt),
            threshold=float(cfg[f"func_{mode}"].threshold),
        )

    def prompt_cfg(self) -> PromptConfig:
        """The prompt settings evaluation uses: the run's prompt type and clicks, the protocol's jitter."""
        p = replace(self.prompt, jitter_px=self.jitter_px, jitter_frac=self.jitter_frac)
        if self.mode_3d == "key_slice":
            p = replace(p, freq=None)
        return p

    def rng(self, case_id: Any) -> np.random.Generator:
        """The generator of one case's extra clicks / jitter: a function of (protocol seed, case id) only."""
        return np.random.default_rng([self.seed, zlib.crc32(str(case_id).encode("utf-8"))])

    @property
    def automatic(self) -> bool:
        return self.prompt.kind.automatic

    def id(self) -> str:
        """Short, complete name of the protocol, e.g. ``box:tight``, ``click:1pos0neg:seed0``."""
        p = self.prompt
        jittered = bool(self.jitter_px or self.jitter_frac)
        parts = p.kind.describe(self.prompt_cfg(), jittered)
        if p.kind.clicks or jittered:
            parts.append(f"seed{self.seed}")
        if p.empty != "skip":
            parts.append(f"empty-{p.empty}")
        return ":".join(parts)

    def record(self) -> dict:
        """Everything needed to reproduce the scores (``run_summary.json["eval_protocol"]``)."""
        out = asdict(self)
        out["prompt"] = asdict(self.prompt_cfg())
        out["id"] = self.id()
        out["first_click"] = "innermost object pixel (max of the distance transform)"
        out["box"] = "tight box of the reference mask" + (
            f", corners moved by up to {self.jitter_px:g} px + {self.jitter_frac:g} x side (seeded)"
            if self.jitter_px or self.jitter_frac
            else ""
        )
        out["objects"] = "declared classes" if self.automatic else "objects present in the reference"
        return out


@dataclass
class CaseResult:
    """One evaluated case: prediction (and reference) as label maps on the input's own grid."""

    case_id: str
    pred: np.ndarray
    target: np.ndarray | None
    spacing: tuple[float, ...]
    classes: Mapping[int, str]
    images: dict[str, np.ndarray] = field(default_factory=dict)
    spacing_unit: str = "mm"  # the case's "spacing_unit": "mm", or "voxel" when it has no spacing
    extras: dict[str, Any] = field(
        default_factory=dict
    )  # what an ``on_case`` writer needs (raw case, prompts)
    direction: np.ndarray | None = None  # Geometry.direction (else that of extras["raw"]): sheared HD95
    ignore_label: int | None = None  # nnU-Net "ignore" id (else that of extras["raw"]): left out of scores


def _direction(res: CaseResult) -> np.ndarray | None:
    """The direction cosines of the case's grid: its own, or its raw case's geometry's."""
    if res.direction is not None:
        return res.direction
    raw = res.extras.get("raw")
    return getattr(raw.get("geometry"), "direction", None) if isinstance(raw, dict) else None


def _ignore_label(res: CaseResult) -> int | None:
    """The case's unannotated-voxel id: its own, or its raw case's ``ignore_label``."""
    if res.ignore_label is not None:
        return int(res.ignore_label)
    raw = res.extras.get("raw")
    value = raw.get("ignore_label") if isinstance(raw, dict) else None
    return None if value is None else int(value)


def run_evaluation(
    n_cases: int,
    evaluate_case: Callable[[int], CaseResult | None],
    protocol: EvalProtocol,
    *,
    limit: int | None = None,
    progress: bool = True,
    desc: str = "evaluate",
    on_case: Callable[[CaseResult, list[dict]], None] | None = None,
    shard: tuple[int, int] | None = None,
) -> tuple[dict[str, float], list[dict], dict[str, np.ndarray]]:
    """The evaluation loop: score cases ``0..n-1`` (``limit`` first ones) with ``evaluate_case``.

    ``evaluate_case(i)`` is the model-specific part (prompts from ``protocol``, forward, label map); it
    may return None to skip a case. ``on_case(result, rows)`` runs after each case (writing outputs).
    ``shard=(rank, world)`` (a distributed run, every rank calling): this rank scores cases ``rank,
    rank + world, ...`` and rank 0 gathers the rows and pictures of all ranks in case order, so its result
    is the single-process one; the other ranks return ``({}, [], {})``.

    Returns:
        (summary ``{"val/dice": ...}``, rows (one per case x class, with ``eval_protocol``), pictures).
    """
    from medseg.train.distributed import gather_by_index

    n = n_cases if not limit else min(n_cases, int(limit))
    rank, world = shard if shard else (0, 1)
    done: list[tuple[int, tuple[list[dict], dict[str, np.ndarray]]]] = []
    pid = protocol.id()
    for i in tqdm(range(rank, n, world), desc=desc, leave=False, disable=not progress or rank != 0):
        res = evaluate_case(i)
        if res is None:
            continue
        rows: list[dict] = []
        if res.target is not None:
            cid, unit = str(res.case_id), res.spacing_unit
            rows = score_case(
                res.pred,
                res.target,
                res.spacing,
                res.classes,
                case_id=cid,
                unit=unit,
                direction=_direction(res),
                ignore_label=_ignore_label(res),
            )
            for r in rows:
                r["eval_protocol"] = pid
        done.append((i, (rows, dict(res.images))))
        if on_case is not None:
            on_case(res, rows)
    if world > 1:
        log.info("evaluation shard %d/%d: %d of %d cases", rank, world, len(done), n)
    gathered = gather_by_index(done) if world > 1 else done
    if gathered is None:  # not rank 0
        return {}, [], {}
    acc = MetricAccumulator()
    images: dict[str, np.ndarray] = {}
    for _, (rows, pictures) in gathered:
        acc.add_rows(rows)
        for name, img in pictures.items():
            if len(images) < 4:
                images[name] = img
    if not acc.rows:
        return {}, [], images
    summary = {f"val/{k}": float(v) for k, v in acc.summary().items()}
    return summary, acc.rows, images


def shard_of(ctx) -> tuple[int, int] | None:
    """``(rank, world)`` of a run context's process group, None when it runs alone."""
    d = getattr(ctx, "dist", None)
    return (d.rank, d.world_size) if d is not None and d.enabled else None


# ---------------------------------------------------------------------- 2D
def objects_to_label_map(
    logits: torch.Tensor, obj_class: torch.Tensor, size, threshold: float = 0.0
) -> torch.Tensor:
    """Per-object logits [N,S,S] of one image -> label map [S,S]; overlaps go to the highest logit."""
    out = torch.zeros(size, dtype=torch.long, device=logits.device)
    if logits.shape[0] == 0:
        return out
    best, arg = logits.max(0)
    fg = best > threshold
    out[fg] = obj_class[arg[fg]]
    return out


def eval_batch_2d(sample: dict, protocol: EvalProtocol):
    """The ImageBatch of one validation image with the protocol's prompts (never the training jitter)."""
    return collate_sam2_2d([sample], protocol.prompt_cfg(), protocol.rng(sample.get("case_id", "")))


@torch.no_grad()
def evaluate_2d(task, model, ctx, settings, *, vis_dir: Path | None = None, threshold: float | None = None):
    """Score every validation image; returns (summary {"val/dice", ...}, rows, {name: image}).

    The model-specific part is ``task.predict(model, batch) -> logits [N,S,S]`` per object. Metrics are
    computed on each image's own grid (logits resized bilinearly to (H, W)) with its own spacing.
    ``settings`` (:class:`medseg.train.task_settings.TaskSettings`) gives the protocol, the number of
    cases (``limit_val_batches``), how many get a picture (``vis_max_cases``, 8 by default) and the
    progress bar; ``threshold`` overrides the protocol's.
    """
    samples = ctx.val_samples
    if samples is None or len(samples) == 0:
        return {}, [], {}
    protocol = settings.protocol
    thr = protocol.threshold if threshold is None else float(threshold)
    n_vis = 8 if settings.vis_max_cases is None else int(settings.vis_max_cases)
    classes = {int(k): v for k, v in ctx.label_names.items() if int(k) > 0}
    kind = protocol.prompt.kind

    def evaluate_case(i: int) -> CaseResult:
        s = samples.get(i, np.random.default_rng([0, i]))  # no augmentation at evaluation
        batch = eval_batch_2d(s, protocol).to(ctx.device)
        size = tuple(batch.images.shape[-2:])
        lab = torch.as_tensor(s["label"]).reshape(size)
        logits = task.predict(model, batch) if batch.masks.shape[0] else batch.images.new_zeros((0, *size))
        pred = objects_to_label_map(logits.float(), batch.obj_class, size, thr)
        if s.get("label_orig") is not None:  # score on the image's own grid, logits resized as SAM2 does
            target = np.asarray(s["label_orig"])
            hw = target.shape
            vh, vw = s.get("valid_hw") or size  # a longest-side resize pads: the padding is not image
            up = logits.float()[None, :, :vh, :vw]
            up = F.interpolate(up, size=hw, mode="bilinear", align_corners=False)[0]
            scored = objects_to_label_map(up, batch.obj_class, hw, thr).cpu().numpy()
            sp = s["spacing_orig"]
        else:
            target, scored, sp = lab.cpu().numpy(), pred.cpu().numpy(), s.get("spacing", (1.0, 1.0, 1.0))
        images = {}
        if vis_dir is not None and i < n_vis:
            out = Path(vis_dir) / f"{s['case_id']}.png"

            def draw():
                grid = _picture(s, batch, lab, pred, target, scored, samples, kind, classes)
                save_png(grid, out)
                return grid

            grid = picture_or_warning(draw, str(out))
            if grid is not None:
                images[f"val_images/{s['case_id']}"] = grid
        return CaseResult(
            str(s["case_id"]), scored, target, (float(sp[-2]), float(sp[-1])), classes, images,
            spacing_unit=s.get("spacing_unit", "mm"), ignore_label=s.get("ignore_label"),
        )  # fmt: skip

    return run_evaluation(
        len(samples),
        evaluate_case,
        protocol,
        limit=settings.limit_val_batches,
        progress=settings.progress_bar,
        desc="validate",
        shard=shard_of(ctx),  # several processes: each scores its share, rank 0 gets every row
    )


def _picture(s, batch, lab, pred, target, scored, samples, kind, classes: dict) -> np.ndarray:
    """image | reference | prediction | prompt drawn on the grid that was scored (the image's own
    resolution, capped by medseg.eval.viz) when the raw image is known, else at the model's input size."""
    from medseg.data.transforms import apply_intensity

    raw, spec = s.get("image_orig"), getattr(getattr(samples, "transform", None), "intensity", None)
    if raw is not None and spec is not None and s.get("label_orig") is not None:
        image = apply_intensity(np.squeeze(np.asarray(raw)), s.get("intensity_window") or spec)
        vh, vw = s.get("valid_hw") or tuple(batch.images.shape[-2:])  # prompts live in the valid part
        gt, pr, fy, fx = target, scored, target.shape[0] / vh, target.shape[1] / vw
    else:
        image, gt, pr, fy, fx = batch.images[0], lab.cpu().numpy(), pred.cpu().numpy(), 1.0, 1.0
    return panel_grid(
        image,
        gt,
        pr,
        boxes=batch.boxes.cpu().numpy() * [fx, fy, fx, fy] if kind.box else None,
        points=batch.points.cpu().numpy() * [fx, fy] if kind.clicks else None,
        point_labels=batch.point_labels.cpu().numpy() if kind.clicks else None,
        names=classes if len(classes) > 1 else None,
    )


def protocol_of(task) -> EvalProtocol | None:
    """The protocol a task evaluates with (its settings' protocol); None for a task without one."""
    settings = getattr(task, "settings", None)
    return getattr(settings, "protocol", None)


def protocol_record(task) -> dict | None:
    p = protocol_of(task)
    return p.record() if p is not None else None


__all__: Sequence[str] = (
    "CaseResult",
    "EvalProtocol",
    "evaluate_2d",
    "objects_to_label_map",
    "protocol_record",
    "run_evaluation",
    "shard_of",
)
