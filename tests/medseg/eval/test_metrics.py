"""medseg.eval.metrics: hand-computed Dice/IoU/HD95, empty rule, spacing, accumulator, CSV."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
import torch

from medseg.eval.metrics import MetricAccumulator, score_case


def _pair() -> tuple[np.ndarray, np.ndarray]:
    target = np.zeros((4, 4), np.int64)
    target[0, 0:3] = 1
    pred = np.zeros((4, 4), np.int64)
    pred[0, 1:4] = 1
    return pred, target


def test_dice_iou_hand_values():
    pred, target = _pair()
    (row,) = score_case(pred, target, (1.0, 1.0), {1: "a"}, case_id="c1")
    assert row["dice"] == pytest.approx(2 * 2 / (3 + 3))
    assert row["iou"] == pytest.approx(2 / 4)
    assert (row["tp"], row["fp"], row["fn"], row["status"], row["case_id"]) == (2, 1, 1, "ok", "c1")
    # surface distances per direction are [0, 0, 1] px; their 95th percentile (linear) is 0.9
    assert row["hd95"] == pytest.approx(0.9)


def test_torch_and_bool_inputs():
    pred, target = _pair()
    (row,) = score_case(torch.from_numpy(pred > 0), target > 0, None, {3: "x"})
    assert row["class_id"] == 3 and row["dice"] == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("spacing", "expected"), [((1.0, 1.0), 3.0), ((1.0, 2.0), 6.0), ((2.0, 1.0), 3.0), ((9.0, 2.0, 1.0), 3.0)]
)
def test_hd95_spacing_2d(spacing, expected):
    target = np.zeros((8, 8), np.int64)
    pred = np.zeros((8, 8), np.int64)
    target[2, 2] = 1
    pred[2, 5] = 1  # 3 pixels apart along x (columns)
    (row,) = score_case(pred, target, spacing, {1: "a"})
    assert row["hd95"] == pytest.approx(expected)


def test_hd95_spacing_3d_and_single_slice():
    target = np.zeros((4, 6, 6), np.int64)
    pred = np.zeros((4, 6, 6), np.int64)
    target[0, 2, 2] = 1
    pred[3, 2, 2] = 1  # 3 slices apart
    (row,) = score_case(pred, target, (2.5, 1.0, 1.0), {1: "a"})
    assert row["hd95"] == pytest.approx(7.5)
    (row2d,) = score_case(pred[:1] * 0 + target[:1], target[:1], (2.5, 1.0, 1.0), {1: "a"})
    assert row2d["dice"] == 1.0 and row2d["hd95"] == 0.0


def test_empty_rule():
    z = np.zeros((4, 4), np.int64)
    obj = z.copy()
    obj[1:3, 1:3] = 1
    (both,) = score_case(z, z, (1, 1), {1: "a"})
    assert both["status"] == "empty_both" and math.isnan(both["dice"]) and math.isnan(both["iou"])
    (fp,) = score_case(obj, z, (1, 1), {1: "a"})
    assert (fp["status"], fp["dice"], fp["iou"]) == ("false_positive", 0.0, 0.0) and math.isnan(fp["hd95"])
    (miss,) = score_case(z, obj, (2.0, 1.0), {1: "a"})
    assert (miss["status"], miss["dice"], miss["iou"]) == ("missed", 0.0, 0.0)
    assert miss["hd95"] == pytest.approx(math.sqrt((4 * 2.0) ** 2 + (4 * 1.0) ** 2))  # image diagonal in mm


def test_accumulator_summary_excludes_empty_both():
    pred, target = _pair()
    acc = MetricAccumulator()
    lab_p = pred.copy()
    lab_t = target.copy()
    lab_t[3, 3] = 2
    lab_p[3, 3] = 2  # class 2 perfect
    acc.add_case(lab_p, lab_t, (1, 1), {1: "a", 2: "b", 3: "c"}, case_id="x")  # class 3 empty in both
    acc.add_case(np.zeros((4, 4), np.int64), target, (1, 1), {1: "a"}, case_id="y")  # missed
    s = acc.summary()
    assert s["dice/a"] == pytest.approx((2 / 3 + 0) / 2)
    assert s["dice/b"] == pytest.approx(1.0)
    assert math.isnan(s["dice/c"])
    assert s["dice"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert s["iou"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert (s["empty_both"], s["missed"], s["n_rows"], s["n_applicable"]) == (1, 1, 4, 3)
    acc.reset()
    assert acc.rows == []


def test_bad_inputs():
    pred, target = _pair()
    with pytest.raises(ValueError, match=r"\(4, 5\)"):
        score_case(pred, np.zeros((4, 5), np.int64), None, {1: "a"})
    with pytest.raises(ValueError, match="float"):
        score_case(pred.astype(np.float32), target, None, {1: "a"})
    with pytest.raises(ValueError, match=r"\(1.0, 2.0, 3.0, 4.0\)"):
        score_case(pred, target, (1.0, 2.0, 3.0, 4.0), {1: "a"})
    with pytest.raises(ValueError, match="-1"):
        score_case(pred, target, (-1.0, 1.0), {1: "a"})
    with pytest.raises(ValueError, match="exactly one class"):
        score_case(pred > 0, target > 0, None, {1: "a", 2: "b"})


def _read(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_write_csv_union_of_columns_and_nan(tmp_path):
    from medseg.eval.tables import write_csv

    path = tmp_path / "sub" / "metrics.csv"
    write_csv(
        path, [{"epoch": 0, "dice": 0.5}, {"epoch": 1, "dice": float("nan")}, {"epoch": 2, "hd95": 3.0}]
    )
    rows = _read(path)
    assert list(rows[0]) == ["epoch", "dice", "hd95"]
    assert (
        rows[1]["dice"] == "" and rows[0]["hd95"] == "" and rows[2] == {"epoch": "2", "dice": "", "hd95": "3"}
    )
    assert [p.name for p in path.parent.iterdir()] == ["metrics.csv"]  # no temporary files left


def test_hd95_unit_column_follows_the_spacing_and_the_dimension():
    pred, target = _pair()
    (mm,) = score_case(pred, target, (2.0, 1.0), {1: "a"})
    (px,) = score_case(pred, target, (1.0, 1.0), {1: "a"}, unit="voxel")
    (vox,) = score_case(pred[None].repeat(2, 0), target[None].repeat(2, 0), None, {1: "a"}, unit="voxel")
    (one_slice,) = score_case(pred[None], target[None], (1.0, 1.0, 1.0), {1: "a"}, unit="voxel")
    assert (mm["hd95_unit"], px["hd95_unit"], vox["hd95_unit"], one_slice["hd95_unit"]) == (
        "mm",
        "px",
        "voxel",
        "px",
    )
    with pytest.raises(ValueError, match="unit"):
        score_case(pred, target, None, {1: "a"}, unit="cm")


def test_summary_never_averages_hd95_across_units():
    pred, target = _pair()
    far = np.zeros((4, 4), np.int64)
    far[3, 0:3] = 1  # 3 rows away from the target
    acc = MetricAccumulator()
    acc.add_case(pred, target, (1.0, 1.0), {1: "a"}, case_id="mm")
    acc.add_case(far, target, (1.0, 1.0), {1: "a"}, case_id="px", unit="voxel")
    s = acc.summary()
    mm_row, px_row = acc.rows
    assert s["hd95_mm"] == pytest.approx(mm_row["hd95"]) and s["hd95_px"] == pytest.approx(px_row["hd95"])
    assert s["hd95_mm/a"] == s["hd95_mm"] and s["hd95_px/a"] == s["hd95_px"]
    assert mm_row["hd95"] != px_row["hd95"]  # a mixed mean would differ from both
    assert not [k for k in s if k.startswith("hd95") and not k.startswith(("hd95_mm", "hd95_px"))], s
    assert s["dice"] == pytest.approx((mm_row["dice"] + px_row["dice"]) / 2)  # unit-free scores still pool


# ---------------------------------------------------------------- physical HD95 for sheared grids (issue 20, 5)
def _sheared_pair() -> tuple[np.ndarray, np.ndarray]:
    target = np.zeros((8, 10, 12), np.int64)
    target[2:6, 3:7, 2:9] = 1
    pred = np.zeros_like(target)
    pred[3:7, 2:8, 4:10] = 1
    return pred, target


def _brute_force_hd95(pred: np.ndarray, target: np.ndarray, affine: np.ndarray) -> float:
    """Surface voxels (mask minus its erosion) mapped through the (4, 4) voxel (i, j, k) -> mm affine,
    all pairwise distances, the larger of the two directed 95th percentiles."""
    from scipy.ndimage import binary_erosion

    def surface_mm(mask):
        kji = np.argwhere(mask & ~binary_erosion(mask))
        ijk1 = np.c_[kji[:, ::-1], np.ones(len(kji))]
        return (ijk1 @ affine.T)[:, :3]

    a, b = surface_mm(pred > 0), surface_mm(target > 0)
    d = np.linalg.norm(a[:, None] - b[None], axis=-1)
    return float(max(np.percentile(d.min(1), 95), np.percentile(d.min(0), 95)))


def test_hd95_of_a_sheared_volume_is_physical():
    """A gantry tilt (the slice axis k leans 25 degrees towards y) moves voxels; HD95 follows the affine,
    not the spacing alone."""
    from medseg.data.io import _geometry_from_affine

    pred, target = _sheared_pair()
    tilt = np.deg2rad(25.0)
    affine = np.array(
        [[0.8, 0, 0, 0], [0, 0.9, 2.5 * np.sin(tilt), 0], [0, 0, 2.5 * np.cos(tilt), 0], [0, 0, 0, 1.0]]
    )
    geom = _geometry_from_affine(affine, "sheared.nii.gz")
    (row,) = score_case(pred, target, geom.spacing, {1: "a"}, direction=geom.direction)
    expected = _brute_force_hd95(pred, target, affine)
    assert row["hd95"] == pytest.approx(expected, rel=1e-6)
    (axis_aligned,) = score_case(pred, target, geom.spacing, {1: "a"})
    assert abs(axis_aligned["hd95"] - expected) > 0.05  # the spacing-only value is wrong here


def test_hd95_with_an_orthogonal_direction_is_unchanged():
    pred, target = _sheared_pair()
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])  # an oblique-free rotation
    (plain,) = score_case(pred, target, (2.5, 0.9, 0.8), {1: "a"})
    (rotated,) = score_case(pred, target, (2.5, 0.9, 0.8), {1: "a"}, direction=rot)
    assert rotated["hd95"] == plain["hd95"]
    affine = np.diag([0.8, 0.9, 2.5, 1.0])
    assert plain["hd95"] == pytest.approx(_brute_force_hd95(pred, target, affine), rel=1e-6)


def test_evaluation_loop_scores_a_case_in_its_own_geometry():
    """Validation and inference score through run_evaluation: the case's geometry reaches HD95."""
    from medseg.data.io import _geometry_from_affine
    from medseg.data.prompts import PromptConfig
    from medseg.eval.evaluation import CaseResult, EvalProtocol, run_evaluation

    pred, target = _sheared_pair()
    affine = np.array([[0.8, 0, 0, 0], [0, 0.9, 1.2, 0], [0, 0, 2.2, 0], [0, 0, 0, 1.0]])
    geom = _geometry_from_affine(affine, "sheared.nii.gz")
    raw = {"case_id": "c", "spacing": geom.spacing, "geometry": geom}
    results = [
        CaseResult("c", pred, target, geom.spacing, {1: "a"}, direction=geom.direction),
        CaseResult("c", pred, target, geom.spacing, {1: "a"}, extras={"raw": raw}),  # as inference
    ]
    protocol = EvalProtocol(prompt=PromptConfig(type="box"))
    expected = _brute_force_hd95(pred, target, affine)
    for res in results:
        _, rows, _ = run_evaluation(1, lambda i, res=res: res, protocol, progress=False)
        assert rows[0]["hd95"] == pytest.approx(expected, rel=1e-6)
