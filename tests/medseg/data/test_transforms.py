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


def test_mri_percentile_in_unit_range():
    x = np.random.default_rng(0).normal(300, 50, (4, 8, 8))
    y = apply_intensity(x, parse_intensity({"modality": "mri", "percentile": [1, 99]}))
    assert y.min() == 0 and y.max() == pytest.approx(1)


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
