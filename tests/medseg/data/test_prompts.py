"""Prompt geometry (boxes, clicks, x/y order), 3D key slices, and the SAM2 collates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from medseg.data.batch import ImageBatch, collate_sam2_2d
from medseg.data.prompts import (
    PromptConfig,
    box_from_mask,
    clicks_from_mask,
    key_slice,
    object_prompt,
    prompt_slices,
    prompts_3d,
    prompts_for_objects,
)
from medseg.errors import DataError
from tests.data_helpers import ROOT

H, W = 40, 80


def asym_mask():
    """Object near the top-right: rows 5..11, columns 60..71 (far from the diagonal)."""
    m = np.zeros((H, W), bool)
    m[5:12, 60:72] = True
    return m


def test_box_contains_object_xyxy():
    box = box_from_mask(asym_mask())
    np.testing.assert_array_equal(box, [60, 5, 71, 11])  # x = column first
    assert box_from_mask(np.zeros((H, W), bool)) is None


def test_box_jitter_bounded_and_clipped():
    rng = np.random.default_rng(0)
    for _ in range(50):
        box = box_from_mask(asym_mask(), jitter_px=3, jitter_frac=0.1, rng=rng)
        assert np.all(np.abs(box - [60, 5, 71, 11]) <= [3 + 1.2, 3 + 0.7, 3 + 1.2, 3 + 0.7 + 1e-5])
        assert (
            box[0] <= box[2] and box[1] <= box[3] and box.min() >= 0 and box[2] <= W - 1 and box[3] <= H - 1
        )
    edge = np.zeros((H, W), bool)
    edge[0:3, 77:80] = True
    for _ in range(20):
        b = box_from_mask(edge, jitter_px=10, rng=rng)
        assert b.min() >= 0 and b[2] <= W - 1


def test_clicks_inside_outside_and_not_swapped():
    m = asym_mask()
    rng = np.random.default_rng(1)
    pts, labels = clicks_from_mask(m, n_pos=4, n_neg=5, rng=rng)
    assert labels.tolist() == [1] * 4 + [0] * 5
    for (x, y), lab in zip(pts.astype(int), labels):
        assert m[y, x] == bool(lab)  # indexed [row=y, col=x]
    x, y = pts[0]
    assert 60 <= x <= 71 and 5 <= y <= 11  # the innermost click sits in the object, x/y not swapped


def test_object_prompt_types_and_empty():
    m = asym_mask()
    assert object_prompt(m, {"type": "mask"})["mask_prompt"].sum() == m.sum()
    none = object_prompt(m, {"type": "none"})
    assert none["points"].shape == (0, 2) and not none["box"].any()
    empty = np.zeros_like(m)
    assert object_prompt(empty, {"type": "box", "empty": "skip"}) is None
    neg = object_prompt(empty, {"type": "box", "empty": "negative", "n_neg": 2})
    assert neg["empty"] and neg["point_labels"].tolist() == [0, 0] and not neg["box"].any()
    lab = np.zeros((H, W), np.int64)
    lab[m] = 2
    lab[30:35, 2:6] = 5
    ps = prompts_for_objects(lab, [2, 5, 7], {"type": "box"})
    assert [p["obj_id"] for p in ps] == [2, 5]
    np.testing.assert_array_equal(ps[1]["box"], [2, 30, 5, 34])


def test_key_slice_and_freq():
    m = np.zeros((10, 8, 8), bool)
    m[2:9, 2:4, 2:4] = True
    m[3, :, :] = True  # largest slice
    assert key_slice(m, "largest") == 3 and key_slice(m, "middle") == 5
    assert prompt_slices(m, None, "largest") == [3]
    assert prompt_slices(m, 2, "largest") == [3, 5, 7]
    assert prompt_slices(m, 3, "middle") == [2, 5, 8]
    assert key_slice(np.zeros((3, 4, 4), bool)) is None
    lab = m.astype(np.int64)
    p = prompts_3d(lab, [1, 4], {"type": "box", "freq": 2, "empty": "negative"})
    assert sorted(p[1]) == [3, 5, 7] and p[4][5]["empty"]


def test_prompt_configs_load():
    for f in sorted((ROOT / "conf" / "prompt").glob("*.yaml")):
        cfg = PromptConfig.from_cfg(OmegaConf.load(f))
        assert cfg.type == f.stem
    with pytest.raises(DataError, match="prompt.type"):
        PromptConfig.from_cfg({"type": "scribble"})
    with pytest.raises(DataError, match="prompt.empty"):
        PromptConfig.from_cfg({"empty": "ignore"})


def _sample(label, s=16, cid="a"):
    return {
        "image": torch.randn(1, 3, s, s),
        "label": torch.as_tensor(label)[None],
        "case_id": cid,
        "spacing": (1.0, 0.5, 0.25),
        "label_names": {1: "x", 2: "y", 3: "z"},
    }


def test_collate_sam2_2d():
    l1 = np.zeros((16, 16), np.int64)
    l1[2:5, 10:14] = 1
    l1[8:12, 1:4] = 3
    l2 = np.zeros((16, 16), np.int64)
    l2[5:9, 5:9] = 2
    batch = collate_sam2_2d(
        [_sample(l1), _sample(l2, cid="b")],
        {"type": "click", "n_pos": 2, "n_neg": 1},
        np.random.default_rng(0),
    )
    assert isinstance(batch, ImageBatch) and batch.images.shape == (2, 3, 16, 16)
    assert batch.obj_img.tolist() == [0, 0, 1] and batch.obj_class.tolist() == [1, 3, 2]
    assert batch.masks.dtype == torch.bool and batch.masks.shape == (3, 16, 16)
    assert batch.points.shape == (3, 3, 2) and batch.point_labels[:, :2].eq(1).all()
    assert batch.case_ids == ["a", "b"] and batch.spacing.tolist() == [[0.5, 0.25], [0.5, 0.25]]
    neg = collate_sam2_2d([_sample(l1), _sample(l2)], {"type": "box", "empty": "negative"})
    assert neg.obj_class.tolist() == [1, 2, 3, 1, 2, 3] and neg.masks.flatten(1).any(1).sum() == 3
    assert (neg.point_labels == -1).sum() == 3  # box-prompted objects pad their point slot
    box = collate_sam2_2d([_sample(l1)], {"type": "box"})
    np.testing.assert_array_equal(box.boxes[0].numpy(), [10, 2, 13, 4])
    assert box.to("cpu").images.shape == (1, 3, 16, 16)
