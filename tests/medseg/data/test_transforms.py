"""Intensity, resize, normalisation and MONAI augmentations on raw cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.data.io import Geometry
from medseg.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    apply_intensity,
    build_transform,
    parse_intensity,
)
from medseg.errors import DataError


def _case(image, label=None, spacing=(2.0, 0.5, 0.5)):
    return {
        "image": image,
        "label": label,
        "case_id": "c",
        "spacing": spacing,
        "geometry": Geometry.identity("x"),
        "label_names": {1: "a"},
    }


def _denorm(x):
    return x * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)


def test_ct_window_values():
    spec = parse_intensity({"modality": "ct", "window": "abdomen"})
    np.testing.assert_allclose(
        apply_intensity(np.array([-1000, -160, 40, 240, 3000.0]), spec), [0, 0, 0.5, 1, 1]
    )
    assert parse_intensity({"modality": "ct", "window": [-100, 100]})["window"] == (-100.0, 100.0)
    assert parse_intensity({"modality": "ct", "window": "lung"})["window"] == (-1350.0, 150.0)


def test_mri_is_a_z_score_mapped_to_unit_range():
    """modality=mri: percentile clip, z-score, then +-z_range std -> [0, 1] (issue 23: the min-max that used
    to follow the z-score undid it, so every case spanned exactly [0, 1] whatever its spread)."""
    x = np.random.default_rng(0).normal(300, 50, (4, 32, 32)).astype(np.float32)
    spec = parse_intensity({"modality": "mri", "percentile": [0, 100]})
    assert spec.z_range == 3.0
    y = apply_intensity(x, spec)
    mean, std = float(x.astype(np.float64).mean()), float(x.astype(np.float64).std())
    # the case mean maps to 0.5 and one standard deviation to 1/6
    probe = apply_intensity(np.array([mean, mean + std, mean - 2 * std], np.float32), spec.case_window(x))
    assert probe == pytest.approx([0.5, 0.5 + 1 / 6, 0.5 - 2 / 6], abs=1e-5)
    assert float(y.mean()) == pytest.approx(0.5, abs=1e-3)
    assert float(y.std()) == pytest.approx(1 / 6, rel=1e-2)
    assert 0 <= y.min() and y.max() <= 1
    # a z-score, not a min-max: one bright outlier (inside the percentiles) no longer squeezes the others
    x2 = x.copy()
    x2[0, 0, 0] = 5000
    y2 = apply_intensity(x2, spec)
    assert float(np.median(y2)) == pytest.approx(float(np.median(y)), abs=0.02)
    assert y2[0, 0, 0] == 1.0
    # percentile clip first; the z-score uses the clipped case
    clipped = parse_intensity({"modality": "mri", "percentile": [1, 99], "z_range": 2})
    w = clipped.case_window(x)
    lo, hi = np.percentile(x, [1, 99])
    assert w.clip == pytest.approx((lo, hi))
    xc = np.clip(x, lo, hi).astype(np.float64)
    assert w.window == pytest.approx((xc.mean() - 2 * xc.std(), xc.mean() + 2 * xc.std()), rel=1e-5)
    assert apply_intensity(np.full((1, 4, 4), 7.0), clipped) == pytest.approx(0.5)  # constant case
    with pytest.raises(DataError, match="dataset.intensity.z_range"):
        parse_intensity({"modality": "mri", "z_range": 0})


def test_volume_transform_shapes_spacing_and_norm():
    img = np.full((3, 20, 40), 40.0, np.float32)
    lab = np.zeros((3, 20, 40), np.int64)
    lab[:, 5:15, 10:30] = 3
    out = build_transform({"modality": "ct", "window": "abdomen"}, 32)(_case(img, lab))
    assert out["image"].shape == (3, 3, 32, 32) and out["image"].dtype == torch.float32
    assert out["label"].shape == (3, 32, 32) and out["label"].dtype == torch.int64
    assert set(out["label"].unique().tolist()) == {0, 3}
    torch.testing.assert_close(_denorm(out["image"]), torch.full((3, 3, 32, 32), 0.5), atol=1e-5, rtol=0)
    assert out["spacing"] == pytest.approx((2.0, 0.5 * 20 / 32, 0.5 * 40 / 32))
    assert out["orig_shape"] == (3, 20, 40) and out["case_id"] == "c"


def test_rgb_2d_transform():
    img = np.zeros((1, 10, 10, 3), np.float32)
    img[..., 0] = 255
    out = build_transform({"modality": "rgb"}, 16)(_case(img, np.zeros((1, 10, 10), np.int64)))
    d = _denorm(out["image"])[0]
    assert torch.allclose(d[0], torch.ones(16, 16), atol=1e-5) and torch.allclose(
        d[1], torch.zeros(16, 16), atol=1e-5
    )


def test_augment_flip_applies_to_image_and_label_together():
    img = np.zeros((2, 16, 16), np.float32)
    img[:, :, :4] = 240.0
    lab = np.zeros((2, 16, 16), np.int64)
    lab[:, :, :4] = 1
    aug = [
        {
            "_target_": "monai.transforms.RandFlipd",
            "keys": ["image", "label"],
            "prob": 1.0,
            "spatial_axis": 1,
        },
        {
            "_target_": "monai.transforms.RandAffined",
            "keys": ["image", "label"],
            "prob": 1.0,
            "rotate_range": 0.2,
            "mode": ["bilinear", "nearest"],
            "padding_mode": "zeros",
        },
    ]
    out = build_transform({"modality": "ct", "window": "abdomen"}, 16, aug, seed=0)(_case(img, lab))
    assert type(out["label"]) is torch.Tensor and set(out["label"].unique().tolist()) <= {0, 1}
    bright = _denorm(out["image"])[:, 0] > 0.5
    assert out["label"][:, :, 12:].float().mean() > 0.5  # flipped to the right side
    assert (bright == out["label"].bool()).float().mean() > 0.95  # same transform for both


def test_bad_intensity_config():
    with pytest.raises(DataError, match=r"dataset.intensity.window.*abdomn"):
        build_transform({"modality": "ct", "window": "abdomn"}, 32)
    with pytest.raises(DataError, match="dataset.intensity.modality"):
        build_transform({"modality": "pet"}, 32)


def test_intensity_is_a_strategy_made_once_from_the_modality():
    """Issue 16: the modality name is read once (parse_intensity); the objects do the mapping."""
    import re

    from medseg.data.transforms import INTENSITIES, Intensity, volume_window
    from tests.conftest import ROOT

    x = np.linspace(-200, 300, 50, dtype=np.float32).reshape(5, 10)
    for name, cls in INTENSITIES.items():
        spec = parse_intensity({"modality": name})
        assert isinstance(spec, cls) and isinstance(spec, Intensity)
        y = spec.apply(x if name != "none" else x / 300)
        assert y.dtype == np.float32 and 0 <= y.min() <= y.max() <= 1
    mri = parse_intensity({"modality": "mri"})
    win = volume_window(x, mri)  # the whole case's statistics as a fixed window
    assert win is not None and win.window[0] < win.window[1]
    assert volume_window(x, parse_intensity({"modality": "ct"})) is None
    text = (ROOT / "medseg" / "data" / "transforms.py").read_text(encoding="utf-8")
    assert not re.search(r"""modality\s*==\s*["']""", text)  # no if-chain on the name
