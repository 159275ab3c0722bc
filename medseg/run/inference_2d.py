"""``inference_2d.py``: segment a folder of images (no masks needed) with any family's checkpoint.

    python inference_2d.py checkpoint=outputs/.../checkpoint_best.pth input_dir=new_images \
        prompts_file=boxes.json output_dir=preds [mask_dir=masks] [save_vis=true]

Outputs in ``output_dir`` (refused when it holds files, unless ``overwrite=true``; every check runs before
the first byte is written):

- ``<stem>.png``: the label map (uint8 label ids: 0 background, 1.. the classes) at the image's size, and
  ``<stem>.npy`` the same (H, W) int64 array;
- ``metrics.csv`` (Dice, IoU, HD95 per image x class) when ``mask_dir`` holds the masks (matched by stem);
- ``vis/<stem>.png`` (image | prediction overlay) with ``save_vis=true``; ``run_summary.json``.

Prompts, in the image's own pixels (x = column, y = row): ``prompts_file`` JSON
``{"<stem>": [{"class": 1, "box": [x0, y0, x1, y1]}, {"class": 2, "points": [[x, y]], "labels": [1]}]}`` or
CSV with columns ``image,class,x0,y0,x1,y1``; without a file, ``prompt=none`` (automatic mode: every class
of ``classes`` on every image; CNN/YOLO arms and SAM models trained in automatic mode), or, with
``mask_dir``, tight boxes of the mask's objects (``prompt=box``, the evaluation protocol's).
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from medseg.data.datasets.base import list_files
from medseg.data.io import IMAGE_EXT, read_header, read_image, read_label, stem_of
from medseg.data.prompts import PromptConfig
from medseg.data.transforms import build_transform
from medseg.data.volume_prompts import slice_batch
from medseg.errors import DataError
from medseg.eval.inference_model import load_inference_model
from medseg.eval.metrics import score_case
from medseg.eval.tables import write_csv
from medseg.eval.viz import overlay, save_png
from medseg.train.run_folder import check_output_folder
from medseg.train.runtime import atomic_write_text, pick_device, seed_everything

log = logging.getLogger(__name__)


def _prompt(box=None, points=None, labels=None) -> dict:
    pts = np.asarray(points if points is not None else np.zeros((0, 2)), np.float32).reshape(-1, 2)
    labs = np.asarray(labels if labels is not None else [1] * len(pts), np.int64)
    return {
        "box": np.asarray(box if box is not None else np.zeros(4), np.float32),
        "points": pts, "point_labels": labs, "mask_prompt": None, "empty": False,
    }  # fmt: skip


def load_prompts_2d(path: str | Path, classes: dict[int, str]) -> dict[str, list[dict]]:
    """``{stem: [{"class": id, "box"|"points"+"labels"}]}`` from a JSON or CSV prompts file (see module doc)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: prompts_file not found")
    by_name = {v: k for k, v in classes.items()}
    out: dict[str, list[dict]] = {}
    try:
        if path.suffix.lower() == ".csv":
            with path.open(newline="", encoding="utf-8") as f:
                for r in csv.DictReader(f):
                    box = [float(r[k]) for k in ("x0", "y0", "x1", "y1")]
                    out.setdefault(stem_of(r["image"]), []).append({"class": r.get("class") or 1, "box": box})
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise DataError(f"{path}: prompts_file must map image stems to prompt lists")
            out = {stem_of(k): list(v if isinstance(v, list) else [v]) for k, v in data.items()}
    except (KeyError, ValueError, TypeError, UnicodeDecodeError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: prompts_file cannot be read ({type(e).__name__}: {e})") from None
    for stem, items in out.items():
        for p in items:
            if not isinstance(p, dict) or ("box" not in p and "points" not in p):
                raise DataError(f"{path}: image {stem!r}: each prompt needs 'box' or 'points'")
            c = p.get("class", 1)
            cid = int(c) if str(c).lstrip("-").isdigit() else by_name.get(str(c))
            if cid is None or cid <= 0:
                raise DataError(
                    f"{path}: image {stem!r}: unknown class {c!r} (known: {sorted(classes.items())})"
                )
            p["class"] = cid
    return out


def _check_prompt(p: dict, hw: tuple[int, int], where: str) -> None:
    H, W = hw
    if "box" in p:
        x0, y0, x1, y1 = (float(v) for v in p["box"])
        if not (0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H):
            raise DataError(f"{where}: box {p['box']} is outside the image ({W} x {H}) or empty")
    if "points" in p:
        pts = np.asarray(p["points"], np.float32).reshape(-1, 2)
        if (pts < 0).any() or (pts[:, 0] >= W).any() or (pts[:, 1] >= H).any():
            raise DataError(f"{where}: a point lies outside the image ({W} x {H})")


def _objects(stem, hw, size, kind, file_prompts, mask, classes, source) -> tuple[dict[int, dict], list[int]]:
    """``({object index: prompt in S x S pixels}, [class id per object])`` of one image."""
    H, W = hw
    scale = np.array([size / W, size / H], np.float32)
    if file_prompts is not None:
        items = file_prompts.get(stem, [])
        for p in items:
            _check_prompt(p, hw, f"{source}: image {stem!r}")
        prompts = {
            o: _prompt(
                np.asarray(p["box"], np.float32) * np.tile(scale, 2) if "box" in p else None,
                np.asarray(p["points"], np.float32).reshape(-1, 2) * scale if "points" in p else None,
                p.get("labels"),
            )
            for o, p in enumerate(items)
        }
        return prompts, [int(p["class"]) for p in items]
    if kind.automatic:
        ids = sorted(classes)
        return {o: _prompt() for o in range(len(ids))}, ids
    ids = [int(v) for v in np.unique(mask) if v > 0]  # tight boxes of the reference (the protocol's)
    prompts = {}
    for o, k in enumerate(ids):
        ys, xs = np.nonzero(mask == k)
        prompts[o] = _prompt(
            np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32) * np.tile(scale, 2)
        )
    return prompts, ids


def _read_mask(path: Path) -> np.ndarray:
    """(H, W) label ids; a mask with one non-zero value (0/1, 0/255, 0/65535) is class 1."""
    m = np.asarray(read_label(path)[0][0]).astype(np.int64)
    values = np.unique(m[m > 0])
    return (m > 0).astype(np.int64) if len(values) == 1 else m


def run_inference_2d(cfg: DictConfig) -> list[dict]:
    """The whole of ``inference_2d.py``; returns the metric rows (empty without masks)."""
    seed_everything(int(cfg.seed))
    device = pick_device(str(cfg.trainer.device))
    inp, out_dir = Path(str(cfg.input_dir)), Path(str(cfg.output_dir))
    if not inp.is_dir():
        raise FileNotFoundError(f"{inp}: input_dir is not a folder")
    images = list_files(inp, IMAGE_EXT)
    if not images:
        raise DataError(f"{inp}: input_dir holds no image ({', '.join(sorted(IMAGE_EXT))})")
    model, family, mc = load_inference_model(cfg, device)  # checkpoint errors before anything is written
    size = int(mc.image_size)
    classes = {int(k): str(v) for k, v in cfg.classes.items()}
    kind = PromptConfig.from_cfg(cfg.prompt).kind
    file_prompts = load_prompts_2d(cfg.prompts_file, classes) if cfg.prompts_file else None
    masks: dict[str, Path] = {}
    if cfg.mask_dir:
        md = Path(str(cfg.mask_dir))
        if not md.is_dir():
            raise FileNotFoundError(f"{md}: mask_dir is not a folder")
        masks = {stem_of(p): p for p in list_files(md, IMAGE_EXT)}
        missing = [stem_of(p) for p in images if stem_of(p) not in masks]
        if missing:
            raise DataError(f"{md}: no mask for image {missing[0]!r} ({len(missing)} missing)")
    if file_prompts is None and not kind.automatic and not masks:
        raise ValueError(
            f"prompt={cfg.prompt.type}: images without masks need prompts_file=FILE.json|csv or prompt=none"
        )
    for path in images:  # every prompt and mask checked before the first byte is written
        (_, H, W), _ = read_header(path)
        for p in (file_prompts or {}).get(stem_of(path), []):
            _check_prompt(p, (H, W), f"{cfg.prompts_file}: image {stem_of(path)!r}")
        if stem_of(path) in masks and tuple(read_header(masks[stem_of(path)])[0][1:]) != (H, W):
            raise DataError(
                f"{masks[stem_of(path)]}: mask size differs from its image {path.name} ({W} x {H})"
            )
    check_output_folder(out_dir, overwrite=bool(cfg.overwrite))
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / ".write_test").write_text("", encoding="utf-8")
        (out_dir / ".write_test").unlink()
    except OSError as e:
        raise PermissionError(f"{out_dir}: output_dir is not writable ({e.strerror})") from None
    transform = build_transform(cfg.intensity, size)
    rows: list[dict] = []
    for path in images:
        stem = stem_of(path)
        image, geom = read_image(path)
        H, W = image.shape[1:3]
        mask = _read_mask(masks[stem]) if stem in masks else None
        s = transform({"image": image, "label": None, "case_id": stem, "spacing": geom.spacing})
        prompts, ids = _objects(stem, (H, W), size, kind, file_prompts, mask, classes, cfg.prompts_file)
        pred = np.zeros((H, W), np.int64)
        if prompts:
            batch = slice_batch(torch.as_tensor(s["image"])[0], prompts, ids).to(device)
            with torch.no_grad():
                logits = family.predict_image(model, batch, kind).float()
            up = F.interpolate(logits[:, None], size=(H, W), mode="bilinear", align_corners=False)[:, 0]
            best, arg = up.max(0)
            pred = (
                torch.where(best > float(cfg.threshold), batch.obj_class[arg], 0)
                .cpu()
                .numpy()
                .astype(np.int64)
            )
        np.save(out_dir / f"{stem}.npy", pred)
        save_png(pred.astype(np.uint8), out_dir / f"{stem}.png")
        if mask is not None:
            names = {
                k: classes.get(k, f"label_{k}")
                for k in sorted(set(classes) | {int(v) for v in np.unique(mask) if v > 0})
            }
            rows += score_case(pred, mask, None, names, case_id=stem, unit="voxel")
            write_csv(out_dir / "metrics.csv", rows)
        if cfg.save_vis:
            raw = np.asarray(image[0], np.float64)
            raw = raw if raw.ndim == 3 else np.repeat(raw[..., None], 3, axis=2)
            rgb = ((raw - raw.min()) / (np.ptp(raw) + 1e-8) * 255).astype(np.uint8)
            save_png(np.concatenate([rgb, overlay(rgb, pred)], 1), out_dir / "vis" / f"{stem}.png")
    info = {"task": "inference_2d", "checkpoint": str(cfg.checkpoint), "weights": getattr(model, "weights_info", None),
            "model": str(mc.get("name")), "images": len(images), "prompt": str(cfg.prompt.type)}  # fmt: skip
    atomic_write_text(out_dir / "run_summary.json", json.dumps(info, indent=2, default=str))
    print(f"predictions in {out_dir}", flush=True)
    return rows
