"""``inference_3d.py``: segment whole volumes with any family and write masks, pictures and metrics.

Outputs in ``output_dir``:

- ``<case>.npy``: integer labels (D, H, W) = (slice, row, column) for every layout, slices in the
  input's order: the array :mod:`medseg.data.io` reads (NIfTI: nibabel's data ``.transpose(2, 1, 0)``, so
  index [k, j, i]; ITK/DICOM: SimpleITK's ``GetArrayFromImage``; BTCV: slice files by integer k; npz:
  the stored order).
- ``<case>.nii.gz`` beside it when the input has an image header (NIfTI, ITK ``.mha``/``.nrrd``, DICOM):
  the input's shape, affine and header, so viewers overlay it on the input.
- ``metrics.csv``: case x organ Dice, IoU, HD95 and its ``hd95_unit`` (mm, or voxel without spacing)
  when labels exist.
- ``vis/<case>_z###.png`` with ``save_vis=true``.

Prompts come from the labels (key slice box of each organ, or every ``prompt.freq``-th slice) or, for
volumes without labels, from ``prompts_file`` (see :func:`load_prompts_file` for the schema).

``split=val|test`` uses the split the checkpoint was trained with (stored in it, with the dataset's case-id
fingerprint), never one drawn again: see :func:`select_cases`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig

from func_3d.task import refuse_automatic_3d, volume_pictures, volume_prompts
from medseg.data.datasets import build_dataset
from medseg.data.prompts import KINDS
from medseg.data.splits import resolve_splits
from medseg.data.transforms import build_transform
from medseg.data.volume_prompts import VolumePrompts, extent_from_label
from medseg.data.writers import write_like
from medseg.errors import DataError
from medseg.eval.evaluation import CaseResult, EvalProtocol, run_evaluation
from medseg.eval.inference_model import load_inference_model
from medseg.eval.tables import write_csv
from medseg.eval.viz import save_png
from medseg.family import ModelFamily
from medseg.train.runtime import finish_distributed, init_distributed, pick_device, seed_everything

log = logging.getLogger(__name__)


def load_model(cfg: DictConfig, device: torch.device) -> tuple[torch.nn.Module, ModelFamily, int]:
    """The model of ``checkpoint=`` (ours of any family, or a native file with ``model=``), its family and
    image size (:func:`medseg.eval.inference_model.load_inference_model`)."""
    model, family, mc = load_inference_model(cfg, device)
    if isinstance(getattr(model, "weights_info", None), dict):  # the run's record names the model it used
        model.weights_info.setdefault("model", str(mc.get("name") or mc.get("variant")))
    return model, family, int(mc.image_size)


def select_cases(cfg: DictConfig, meta: dict, dataset, checkpoint: str | Path) -> list[str]:
    """The case ids of ``split=`` (train | val | test | all) for checkpoint ``checkpoint`` (``meta``: its
    ``format``, ``splits`` and ``dataset`` fingerprint), never a split drawn anew for a trained checkpoint:

    1. ``splits_file=`` when given (refused when its val/test holds cases the checkpoint trained on);
    2. the split the checkpoint carries (refused for data other than its fingerprint's);
    3. ``splits.json`` beside the checkpoint (older checkpoints, still in their run folder);
    4. the dataset's own split settings, only for weights not trained by this suite (Meta's ``.pt``).
    Otherwise ``split=val|test`` is refused (``split=all`` needs no split).
    """
    from medseg.data.splits import _check, check_same_data, dataset_fingerprint

    split, checkpoint = str(cfg.split), Path(str(checkpoint))
    if split == "all":
        return list(dataset.case_ids)
    if split not in ("train", "val", "test"):
        raise ValueError(f"split={split!r} must be train, val, test or all")
    stored = meta.get("splits")
    known = set(getattr(dataset, "all_case_ids", dataset.case_ids))
    if cfg.splits_file:
        sf = Path(str(cfg.splits_file))
        if not sf.is_file():
            raise DataError(f"{sf}: splits_file not found")
        ids = resolve_splits(dataset, None, sf)[split]
        trained = set((stored or {}).get("train") or []) & set(ids)
        if trained and split != "train":
            raise DataError(
                f"{sf}: split {split!r} holds {len(trained)} training cases of {checkpoint} (e.g. "
                f"{sorted(trained)[0]}); scoring them would leak training data: give the run's splits.json"
            )
        return ids
    if stored:
        check_same_data(meta.get("dataset"), dataset_fingerprint(dataset), checkpoint, cfg.dataset.root)
        return _check(stored, known, f"{checkpoint} (the split it was trained with)")[split]
    beside = checkpoint.parent / "splits.json"
    if beside.is_file():
        return resolve_splits(dataset, None, beside)[split]
    if not str(meta.get("format") or "").startswith("sam2-medical"):
        return resolve_splits(dataset, cfg.dataset.get("split"), None)[split]  # never trained here
    raise DataError(
        f"{checkpoint}: split={split} needs the split the checkpoint was trained with, but it carries none "
        "and has no splits.json beside it: give splits_file=<its run folder>/splits.json, or split=all"
    )


def load_prompts_file(path: str | Path, label_names: dict[int, str]) -> dict[str, list[dict]]:
    """Read a prompts JSON::

        {"<case_id>": {"<organ id or name>": [
            {"slice": 40, "box": [x0, y0, x1, y1]},
            {"slice": 44, "points": [[x, y], ...], "labels": [1, 0, ...]}]}}

    Coordinates are voxel indices of the input: ``x`` along the array's last axis (W; nibabel's i),
    ``y`` along the middle axis (H; nibabel's j), ``slice`` along the first (D; nibabel's k).

    Returns ``{case_id: [{"id", "slice", "box" | "points"+"labels"}]}`` (organs resolved to label ids).
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: prompts_file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: prompts_file is not valid JSON ({e})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: prompts_file must map case ids to organs")
    by_name = {v: int(k) for k, v in label_names.items()}
    out: dict[str, list[dict]] = {}
    for case, organs in data.items():
        if not isinstance(organs, dict):
            raise DataError(f"{path}: case {case!r} must map organs to prompt lists")
        items = []
        for organ, plist in organs.items():
            if str(organ).lstrip("-").isdigit():
                oid = int(organ)
                if oid <= 0 or (label_names and oid not in label_names):
                    raise DataError(
                        f"{path}: case {case!r}: unknown organ id {oid} (known: {sorted(label_names)})"
                    )
            elif organ in by_name:
                oid = by_name[organ]
            else:
                raise DataError(f"{path}: case {case!r}: unknown organ {organ!r} (known: {sorted(by_name)})")
            for p in plist if isinstance(plist, list) else [plist]:
                if "slice" not in p or ("box" not in p and "points" not in p):
                    raise DataError(
                        f"{path}: case {case!r} organ {organ!r}: each prompt needs 'slice' and 'box' or 'points'"
                    )
                labels = p.get("labels", []) if "points" in p else []
                labels = labels if isinstance(labels, list) else [labels]
                bad = [v for v in labels if isinstance(v, bool) or v not in (0, 1)]
                if bad:  # SAM's point labels 2/3 are box corners: a click is 1 (object) or 0 (background)
                    raise DataError(
                        f"{path}: case {case!r} organ {organ!r} slice {p.get('slice')}: click label {bad[0]!r} "
                        "(prompts files take click labels 1 = object, 0 = background; boxes go in 'box')"
                    )
                items.append({"id": oid, **p})
        out[str(case)] = items
    return out


def prompts_from_file(
    items: list[dict], shape_dhw: tuple[int, int, int], size: int, case_id: str, source: str
) -> VolumePrompts:
    """Scale file prompts to the model input and check them against the volume's shape."""
    D, H, W = shape_dhw
    sx, sy = size / W, size / H
    ids = sorted({int(p["id"]) for p in items})
    per: dict[int, dict[int, dict]] = {o: {} for o in range(len(ids))}
    for p in items:
        z = int(p["slice"])
        where = f"{source}: case {case_id!r} organ {p['id']} slice {z}"
        if not 0 <= z < D:
            raise DataError(f"{where}: slice out of range [0, {D})")
        d = {
            "box": np.zeros(4, np.float32),
            "points": np.zeros((0, 2), np.float32),
            "point_labels": np.zeros(0, np.int64),
            "mask_prompt": None,
            "empty": False,
        }
        if "box" in p:
            x0, y0, x1, y1 = (float(v) for v in p["box"])
            if not (0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H):
                raise DataError(f"{where}: box {p['box']} is outside the image ({W} x {H}) or empty")
            d["box"] = np.array([x0 * sx, y0 * sy, x1 * sx, y1 * sy], np.float32)
        if "points" in p:
            pts = np.asarray(p["points"], np.float32).reshape(-1, 2)
            labs = np.asarray(p.get("labels", [1] * len(pts)), np.int64)
            if len(labs) != len(pts):
                raise DataError(f"{where}: {len(pts)} points but {len(labs)} labels")
            if (
                (pts[:, 0] < 0).any()
                or (pts[:, 0] >= W).any()
                or (pts[:, 1] < 0).any()
                or (pts[:, 1] >= H).any()
            ):
                raise DataError(f"{where}: a point lies outside the image ({W} x {H})")
            d["points"], d["point_labels"] = pts * np.array([sx, sy], np.float32), labs
        per[ids.index(int(p["id"]))][z] = d
    return VolumePrompts(per, ids)


def _targets(out_dir: Path, case_id: str, geometric: bool) -> list[Path]:
    return [out_dir / f"{case_id}.npy"] + ([out_dir / f"{case_id}.nii.gz"] if geometric else [])


def run_inference(cfg: DictConfig) -> list[dict]:
    """The whole of ``inference_3d.py``; returns the metric rows (empty without labels).

    Under torchrun / srun / submitit the cases are shared out over the processes (each case written once,
    by the rank that segmented it) and rank 0 writes the one ``metrics.csv`` in the single-process order.
    """
    from medseg.train.distributed import export_cluster_env

    seed_everything(int(cfg.seed))
    export_cluster_env()
    device = pick_device(str(cfg.trainer.device))
    dist_info = init_distributed(device)
    out_dir = Path(cfg.output_dir)
    model, family, size = load_model(cfg, device)  # checkpoint errors before anything is written
    dataset = build_dataset(cfg.dataset)
    label_names = {int(k): v for k, v in dataset.label_names.items() if int(k) > 0}
    split = str(cfg.split)
    ids = select_cases(cfg, getattr(model, "checkpoint_meta", {}), dataset, cfg.checkpoint)
    if not ids:
        raise DataError(f"{cfg.dataset.root}: split {split!r} has no cases")
    file_prompts = load_prompts_file(cfg.prompts_file, label_names) if cfg.prompts_file else None
    if file_prompts is not None and not set(file_prompts) & set(ids):
        raise DataError(
            f"{cfg.prompts_file}: prompts_file names no case of split {split!r} "
            f"(it names {sorted(file_prompts)[:3]}; the split has {sorted(ids)[:3]}...)"
        )
    if cfg.verify_data:  # NaN/inf voxels, unreadable or tiny files: one line, nothing written
        from medseg.data.verify import preflight_cases

        preflight_cases(dataset, ids)
    from medseg.train.run_folder import check_output_folder

    check_output_folder(out_dir, overwrite=bool(cfg.overwrite))  # earlier outputs, metrics.csv included
    if not cfg.overwrite:
        clash = [p for i in ids for p in _targets(out_dir, i, True) if p.exists()]
        if clash:
            raise FileExistsError(
                f"{clash[0]}: exists (and {len(clash) - 1} more outputs); use overwrite=true "
                "or another output_dir"
            )
    if file_prompts is None:  # prompts come from labels: an unlabelled case (imagesTs) would stop mid-way
        unlabelled = [i for i in ids if not dataset.case_files(i).get("label")]
        if unlabelled:
            raise DataError(
                f"{unlabelled[0]}: no label to draw prompts from ({len(unlabelled)} unlabelled case(s) in "
                f"split {split!r}): give prompts_file=FILE.json, or split=val"
            )
    if dist_info.enabled:  # every rank has checked the folder before any of them writes to it
        torch.distributed.barrier()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write_test.{dist_info.rank}"
        probe.write_text("", encoding="utf-8")
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"{out_dir}: output_dir is not writable ({e.strerror})") from None
    transform = build_transform(cfg.dataset.intensity, size)
    protocol = EvalProtocol.from_cfg(cfg, "3d")
    if file_prompts is None and family.propagates:  # slice-by-slice families have an automatic mode
        refuse_automatic_3d(protocol.prompt)
    f3 = cfg.func_3d
    metric_rows: list[dict] = []

    def evaluate_case(i: int) -> CaseResult | None:
        case_id = ids[i]
        raw = dataset.load_case(case_id)
        image = np.asarray(raw["image"])
        D, H, W = image.shape[:3]
        label = raw.get("label")
        # one resize of the volume: with its label when the prompts come from it
        s = transform(raw if label is not None and file_prompts is None else dict(raw, label=None))
        # layouts that declare no organ names (npz) name each case's own ids (label_<id>)
        names = label_names or {int(k): v for k, v in (raw.get("label_names") or {}).items() if int(k) > 0}
        if file_prompts is not None:
            if case_id not in file_prompts:
                log.warning(
                    "%s: no prompts for case %s in %s; skipped", cfg.prompts_file, case_id, cfg.prompts_file
                )
                return None
            vp = prompts_from_file(file_prompts[case_id], (D, H, W), size, case_id, str(cfg.prompts_file))
        elif protocol.prompt.kind.automatic:  # every declared class, no prompt (slice-by-slice families)
            vp = VolumePrompts({o: {} for o in range(len(names))}, sorted(names))
        elif label is not None:
            vp = volume_prompts(s["label"].numpy(), names, protocol, case_id)
        else:
            raise DataError(f"{case_id}: no label to draw prompts from: give prompts_file=FILE.json")
        from_label = file_prompts is None and label is not None
        extent = extent_from_label(s["label"].numpy(), vp) if from_label else None
        pred = family.predict_volume(  # SAM2 propagates; the image families segment slice by slice
            model,
            s["image"],
            vp,
            KINDS["box"] if file_prompts is not None else protocol.prompt.kind,  # file: boxes and/or clicks
            (H, W),
            threshold=float(f3.threshold),
            options={
                "offload": bool(f3.offload),
                "largest_component": bool(f3.largest_component),
                "exact_parity": bool(f3.get("exact_parity", False)),
                "progress": True,
                "extent": extent,  # slice-by-slice: each organ's key-slice prompt on the slices it spans
            },
        )
        spacing = tuple(float(x) for x in raw["spacing"])
        target = np.asarray(label) if label is not None else None
        return CaseResult(
            case_id,
            pred,
            target,
            spacing,
            names,
            spacing_unit=raw.get("spacing_unit", "mm"),
            extras={"raw": raw, "vp": vp},  # for write_case
        )

    def write_case(res: CaseResult, rows: list[dict]) -> None:
        raw, pred, case_id = res.extras["raw"], res.pred, res.case_id
        geom = raw["geometry"]
        geometric = bool(getattr(geom, "oriented", False))  # an image header to overlay on
        npy, *nii = _targets(out_dir, case_id, geometric)
        if geometric:
            write_like(pred, geom, nii[0], overwrite=True)
        write_like(pred, geom, npy, overwrite=True)  # (D, H, W) in slice order, whatever the layout
        if rows and not dist_info.enabled:  # alone: metrics.csv grows case by case
            metric_rows.extend(rows)
            write_csv(out_dir / "metrics.csv", metric_rows)
        if cfg.save_vis:
            for z, g in volume_pictures(
                raw, pred, transform, res.extras["vp"], n=int(cfg.vis_slices)
            ).items():
                save_png(g, out_dir / "vis" / f"{case_id}_z{z:03d}.png")

    shard = (dist_info.rank, dist_info.world_size) if dist_info.enabled else None
    summary, rows, _ = run_evaluation(
        len(ids), evaluate_case, protocol, desc="volumes", on_case=write_case, shard=shard
    )
    finish_distributed()  # rows are gathered: every rank is done before any closes its connections
    if not dist_info.is_main:
        return []
    if dist_info.enabled and rows:  # the gathered rows of every rank, in case order
        metric_rows = rows
        write_csv(out_dir / "metrics.csv", metric_rows)
    write_inference_summary(out_dir, cfg, model, protocol, summary, split, len(ids))
    from medseg.report import report_or_warning

    report_or_warning(out_dir, cfg=cfg, dataset=dataset)  # a failure is a WARNING, never a failed run
    if summary:
        print(
            "per-organ Dice:",
            "  ".join(f"{k[9:]}={v:.3f}" for k, v in summary.items() if k.startswith("val/dice/")),
            f"| mean {summary['val/dice']:.3f}",
            flush=True,
        )
    print(f"predictions in {out_dir}", flush=True)
    return metric_rows


def write_inference_summary(out_dir: Path, cfg, model, protocol, summary: dict, split: str, n: int) -> None:
    """``run_summary.json`` of an inference run: weights (path, sha256), protocol, split, mean scores."""
    from medseg.train.runtime import atomic_write_text

    info = {
        "task": "inference_3d",
        "model": (getattr(model, "weights_info", None) or {}).get("model"),
        "checkpoint": str(cfg.checkpoint),
        "weights": getattr(model, "weights_info", None),
        "eval_protocol": protocol.record(),
        "split": split,
        "cases": n,
        "summary": summary,
    }
    atomic_write_text(out_dir / "run_summary.json", json.dumps(info, indent=2, default=float))
