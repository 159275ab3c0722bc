"""Case-level segmentation metrics (Dice, IoU, HD95 with its unit) built on ``monai.metrics``.

One row per (case, class): :func:`score_case` compares a predicted label map with the reference for each
class id in ``classes`` and returns dict rows; :class:`MetricAccumulator` collects rows over a validation
run and summarises them; :func:`write_rows_csv` appends rows to a CSV.

Arrays are 2D ``(H, W)`` or 3D ``(D, H, W)`` (``(1, H, W)`` is treated as 2D). ``spacing`` is in mm in
the same axis order, ``(sy, sx)`` or ``(sz, sy, sx)``; a 3-element spacing for a 2D array uses its last
two entries. HD95 is the 95th percentile of the symmetric surface distances
(``monai.metrics.compute_hausdorff_distance(percentile=95, spacing=...)``), so anisotropic voxels count
with their physical size. A 3D grid whose ``direction`` is not orthogonal (sheared, e.g. a CT with gantry
tilt: spacing alone would misplace every slice) is measured in physical space instead: MONAI's surface
voxels mapped through ``direction @ diag(spacing)`` and nearest-neighbour distances (a k-d tree), the
larger of the two directed 95th percentiles, as MONAI does; orthogonal directions keep the MONAI value.

HD95 unit (``hd95_unit`` column): ``"mm"`` when the input has a physical spacing (NIfTI, ITK, DICOM, npz
with ``spacing``); without one (PNG/JPEG images, BTCV JPEG slices, ``.npy``) distances are counted in
grid steps, ``"px"`` for 2D and ``"voxel"`` for 3D arrays. A summary never averages across units: its
keys carry the unit (``hd95_mm``, ``hd95_px``, ``hd95_voxel``, ``hd95_mm/<class>``).

Empty-mask rule (``status`` column):

- ``"ok"``: target and prediction non-empty -> Dice, IoU, HD95 as computed.
- ``"empty_both"``: target and prediction both empty -> Dice = IoU = HD95 = NaN. The case is
  *not applicable* for that class: excluded from every mean and counted separately
  (``summary()["empty_both"]``). It never counts as Dice 1.
- ``"false_positive"``: target empty, prediction non-empty -> Dice = 0, IoU = 0, HD95 = NaN (no
  reference surface to measure against). Included in the Dice/IoU means.
- ``"missed"``: target non-empty, prediction empty -> Dice = 0, IoU = 0, HD95 = the diagonal of the
  image's physical extent, ``sqrt(sum((n_i * s_i) ** 2))`` (in the row's unit): the documented worst case, so that a
  model that misses structures cannot get a better mean HD95 than one that finds them.

HD95 means are taken over the finite values of the applicable rows.

Unannotated voxels (nnU-Net's ``ignore`` label, ``ignore_label``): voxels whose reference holds that id
count neither as foreground nor as background of any class (as nnU-Net's ``compute_tp_fp_fn`` with an
ignore mask): they are cleared in both prediction and reference before scoring, so they add no TP, FP
or FN, and the surfaces for HD95 end where the annotation ends. ``ignore`` is never a scored class.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance, compute_iou

__all__ = ["MetricAccumulator", "score_case"]

ROW_KEYS = (
    "case_id", "class_id", "class_name", "dice", "iou", "hd95", "hd95_unit",
    "tp", "fp", "fn", "pred_voxels", "target_voxels", "status",
)  # fmt: skip
SPACING_UNITS = ("mm", "voxel")  # of a case's spacing: physical, or none (one grid step = 1)


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype.kind not in "biu":
        raise ValueError(f"{name} must be a bool or integer label array, got dtype {x.dtype}")
    return x


def _spacing_for(shape: tuple[int, ...], spacing: Sequence[float] | float | None) -> tuple[float, ...]:
    nd = len(shape)
    if spacing is None:
        return (1.0,) * nd
    if np.isscalar(spacing):
        sp = (float(spacing),) * nd
    else:
        sp = tuple(float(s) for s in np.asarray(spacing, dtype=float).ravel())
        if len(sp) == nd + 1 and nd == 2:  # (sz, sy, sx) of a 2D image
            sp = sp[1:]
    if len(sp) != nd or any(not math.isfinite(s) or s <= 0 for s in sp):
        raise ValueError(f"spacing {spacing!r} does not fit an array of shape {shape} (need {nd} values > 0)")
    return sp


def _sheared_grid(direction: Any, sp: tuple[float, ...]) -> np.ndarray | None:
    """(3, 3) map of a (z, y, x) index to mm when ``direction`` is not orthogonal; else None."""
    if direction is None:
        return None
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    d = d / np.where((n := np.linalg.norm(d, axis=0)) > 0, n, 1.0)
    if np.abs(d.T @ d - np.eye(3)).max() <= 1e-6:
        return None
    return d[:, ::-1] * np.asarray(sp, float)  # columns: the z, y, x array axes, scaled to mm


def _physical_hd95(pm: np.ndarray, tm: np.ndarray, to_mm: np.ndarray) -> float:
    """HD95 of two non-empty 3D masks with surface voxels placed at ``index @ to_mm.T`` (mm)."""
    from monai.metrics.utils import get_mask_edges
    from scipy.spatial import cKDTree

    ep, et = get_mask_edges(pm, tm, crop=False, always_return_as_numpy=True)
    a, b = np.argwhere(ep) @ to_mm.T, np.argwhere(et) @ to_mm.T
    if len(a) == 0 or len(b) == 0:
        return math.nan
    d_ab = cKDTree(b).query(a)[0]
    d_ba = cKDTree(a).query(b)[0]
    return float(max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)))


def score_case(
    pred: np.ndarray | torch.Tensor,
    target: np.ndarray | torch.Tensor,
    spacing: Sequence[float] | float | None,
    classes: Mapping[int, str],
    *,
    case_id: str = "",
    unit: str = "mm",
    direction: np.ndarray | Sequence[Sequence[float]] | None = None,
    ignore_label: int | None = None,
) -> list[dict[str, Any]]:
    """Per-class Dice, IoU and HD95 of one case.

    Args:
        pred: predicted label map ``(H, W)`` or ``(D, H, W)``, int (class ids) or bool (then ``classes``
            must hold exactly one id, and ``True`` means that class).
        target: reference label map, same shape and conventions.
        spacing: voxel size in mm, ``(sy, sx)`` / ``(sz, sy, sx)``, a scalar, or None (1 mm).
        classes: ``{class_id: name}`` of the classes to score (usually without background 0).
        case_id: written into each row.
        unit: ``"mm"`` if ``spacing`` is physical, ``"voxel"`` if the input has none (the case's
            ``spacing_unit``); rows then say ``hd95_unit`` ``"px"`` (2D) or ``"voxel"`` (3D).
        direction: (3, 3) direction cosines of a 3D grid (:attr:`medseg.data.io.Geometry.direction`,
            column c = voxel axis x, y, z); when not orthogonal, HD95 is measured in physical space.
        ignore_label: id of unannotated reference voxels (nnU-Net ``ignore``), left out of every class.

    Returns:
        One dict per class with keys ``ROW_KEYS``; see the module docstring for the empty-mask rule.
    """
    p = _to_numpy(pred, "pred")
    t = _to_numpy(target, "target")
    if p.shape != t.shape:
        raise ValueError(f"pred shape {p.shape} differs from target shape {t.shape}")
    if p.ndim == 3 and p.shape[0] == 1:
        p, t = p[0], t[0]
        if spacing is not None and not np.isscalar(spacing) and len(spacing) == 3:
            spacing = tuple(spacing)[1:]
    if p.ndim not in (2, 3):
        raise ValueError(f"pred/target must be (H, W) or (D, H, W), got shape {p.shape}")
    if not classes:
        raise ValueError(f"classes must name at least one class id, got {classes!r}")
    if unit not in SPACING_UNITS:
        raise ValueError(f"unit must be one of {SPACING_UNITS}, got {unit!r}")
    hd95_unit = "mm" if unit == "mm" else "px" if p.ndim == 2 else "voxel"
    if p.dtype == bool or t.dtype == bool:
        if len(classes) != 1:
            raise ValueError(f"bool masks need exactly one class in classes, got {dict(classes)!r}")
        (only,) = classes
        p = np.where(p.astype(bool), only, 0) if p.dtype == bool else p
        t = np.where(t.astype(bool), only, 0) if t.dtype == bool else t
    if ignore_label is not None:
        if int(ignore_label) in {int(c) for c in classes}:
            raise ValueError(f"ignore_label {ignore_label} cannot be a scored class ({dict(classes)!r})")
        annotated = t != int(ignore_label)
        p, t = np.where(annotated, p, 0), np.where(annotated, t, 0)
    sp = _spacing_for(p.shape, spacing)
    diagonal = float(math.sqrt(sum((n * s) ** 2 for n, s in zip(p.shape, sp))))
    to_mm = _sheared_grid(direction, sp) if p.ndim == 3 else None
    if to_mm is not None:  # the longest diagonal of the sheared box
        signs = np.array([[1, 1, 1], [1, 1, -1], [1, -1, 1], [-1, 1, 1]], float)
        diagonal = float(np.linalg.norm((signs * np.asarray(p.shape, float)) @ to_mm.T, axis=1).max())

    rows = []
    for class_id, class_name in classes.items():
        pm = p == int(class_id)
        tm = t == int(class_id)
        tp = int(np.count_nonzero(pm & tm))
        n_pred, n_tgt = int(np.count_nonzero(pm)), int(np.count_nonzero(tm))
        row: dict[str, Any] = {
            "case_id": case_id, "class_id": int(class_id), "class_name": str(class_name), "hd95_unit": hd95_unit,
            "tp": tp, "fp": n_pred - tp, "fn": n_tgt - tp, "pred_voxels": n_pred, "target_voxels": n_tgt,
        }  # fmt: skip
        if n_tgt == 0 and n_pred == 0:
            row |= {"dice": math.nan, "iou": math.nan, "hd95": math.nan, "status": "empty_both"}
        elif n_tgt == 0:
            row |= {"dice": 0.0, "iou": 0.0, "hd95": math.nan, "status": "false_positive"}
        elif n_pred == 0:
            row |= {"dice": 0.0, "iou": 0.0, "hd95": diagonal, "status": "missed"}
        else:
            yp = torch.from_numpy(pm)[None, None].float()
            yt = torch.from_numpy(tm)[None, None].float()
            row["dice"] = float(compute_dice(yp, yt, include_background=True)[0, 0])
            row["iou"] = float(compute_iou(yp, yt, include_background=True)[0, 0])
            with warnings.catch_warnings():  # MONAI's own deprecation notices from get_mask_edges
                warnings.simplefilter("ignore", FutureWarning)
                if to_mm is not None:
                    row["hd95"] = _physical_hd95(pm, tm, to_mm)
                else:
                    hd = compute_hausdorff_distance(
                        yp, yt, include_background=True, percentile=95, spacing=list(sp)
                    )
                    row["hd95"] = float(hd[0, 0])
            row["status"] = "ok"
        rows.append({k: row[k] for k in ROW_KEYS})
    return rows


def _nanmean(values: list[float]) -> float:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(vals)) if vals else math.nan


class MetricAccumulator:
    """Collects :func:`score_case` rows over a run and summarises them.

    ``summary()`` gives ``dice``, ``iou`` and ``hd95_<unit>`` (means over applicable case x class rows;
    HD95 once per unit present, never across units), the same per class as ``dice/<name>``,
    ``iou/<name>``, ``hd95_<unit>/<name>``, and counts ``n_rows``, ``n_applicable``, ``empty_both``,
    ``false_positive``, ``missed``. Rows without ``hd95_unit`` count as mm.
    """

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def reset(self) -> None:
        self.rows = []

    def add_rows(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Add already computed rows (each needs ``class_name``, ``dice``, ``iou``, ``hd95``, ``status``)."""
        for r in rows:
            missing = [k for k in ("class_name", "dice", "iou", "hd95", "status") if k not in r]
            if missing:
                raise ValueError(f"metric row lacks keys {missing}: {dict(r)!r}")
            self.rows.append(dict(r))

    def add_case(
        self,
        pred: np.ndarray | torch.Tensor,
        target: np.ndarray | torch.Tensor,
        spacing: Sequence[float] | float | None,
        classes: Mapping[int, str],
        *,
        case_id: str = "",
        unit: str = "mm",
        direction: np.ndarray | Sequence[Sequence[float]] | None = None,
        ignore_label: int | None = None,
    ) -> list[dict[str, Any]]:
        """Score one case (see :func:`score_case`), keep and return its rows."""
        rows = score_case(
            pred, target, spacing, classes, case_id=case_id, unit=unit, direction=direction,
            ignore_label=ignore_label,
        )  # fmt: skip
        self.rows.extend(rows)
        return rows

    def summary(self) -> dict[str, float]:
        applicable = [r for r in self.rows if r["status"] != "empty_both"]
        units = list(dict.fromkeys(r.get("hd95_unit", "mm") for r in self.rows))
        out: dict[str, float] = {
            "dice": _nanmean([r["dice"] for r in applicable]),
            "iou": _nanmean([r["iou"] for r in applicable]),
        }
        for u in units:
            out[f"hd95_{u}"] = _nanmean([r["hd95"] for r in applicable if r.get("hd95_unit", "mm") == u])
        for name in dict.fromkeys(r["class_name"] for r in self.rows):
            cls = [r for r in applicable if r["class_name"] == name]
            for key in ("dice", "iou"):
                out[f"{key}/{name}"] = _nanmean([r[key] for r in cls])
            for u in units:
                out[f"hd95_{u}/{name}"] = _nanmean([r["hd95"] for r in cls if r.get("hd95_unit", "mm") == u])
        out["n_rows"] = float(len(self.rows))
        out["n_applicable"] = float(len(applicable))
        for status in ("empty_both", "false_positive", "missed"):
            out[status] = float(sum(r["status"] == status for r in self.rows))
        return out
