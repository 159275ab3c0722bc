"""traditional_models.yolo_export / yolo: polygon round trip (holes, several objects), offline tiny training."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from traditional_models.yolo_export import (
    export_yolo_dataset,
    label_to_lines,
    mask_to_polygons,
    polygons_to_mask,
)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _label(shift: int = 0) -> np.ndarray:
    """64x64: class 1 = ring (hole) + small blob, class 2 = rectangle with two holes + a thin bar."""
    yy, xx = np.mgrid[:64, :64]
    lab = np.zeros((64, 64), np.int64)
    r = np.hypot(yy - 20, xx - 20 - shift)
    lab[(r < 14) & (r >= 6)] = 1
    lab[4:9, 48:54] = 1
    lab[40:60, 30:60] = 2
    lab[44:54, 34:40] = 0
    lab[46:50, 50:56] = 0
    lab[62:64, 2:40] = 2
    return lab


def test_mask_polygon_round_trip_with_holes_and_several_objects():
    lab = _label()
    lines = label_to_lines(lab, [1, 2])
    assert [ln.split()[0] for ln in lines].count("0") == 2  # ring + blob
    assert [ln.split()[0] for ln in lines].count("1") == 2  # holed rectangle + bar
    back = polygons_to_mask(lines, 64, 64)
    for cls in (1, 2):
        assert _dice(lab == cls, back == cls) > 0.95
    assert back[20, 20] == 0  # the ring's hole stays empty
    assert back[48, 36] == 0 and back[47, 52] == 0


def test_mask_to_polygons_small_and_empty():
    assert mask_to_polygons(np.zeros((8, 8), bool)) == []
    m = np.zeros((8, 8), bool)
    m[3, 3] = True
    (poly,) = mask_to_polygons(m)
    assert len(poly) >= 3
    assert mask_to_polygons(m, min_area=2) == []


def _samples(n: int):
    rng = np.random.default_rng(0)
    for i in range(n):
        lab = _label(shift=i)
        img = rng.integers(0, 50, (64, 64, 3), dtype=np.uint8)
        img[lab == 1] = (220, 60, 60)
        img[lab == 2] = (60, 200, 90)
        yield f"case/{i}", img, lab


def test_export_layout_and_labels(tmp_path):
    data_yaml = export_yolo_dataset(
        {"train": list(_samples(3)), "val": list(_samples(1))},
        tmp_path / "yolo",
        {0: "bg", 1: "ring", 2: "box"},
    )
    data = yaml.safe_load(data_yaml.read_text(encoding="utf-8"))
    assert data["names"] == {0: "ring", 1: "box"} and data["nc"] == 2 and data["label_ids"] == [1, 2]
    assert (tmp_path / "yolo" / "images" / "train" / "case_0.png").is_file()
    lines = (tmp_path / "yolo" / "labels" / "train" / "case_1.txt").read_text(encoding="utf-8").splitlines()
    back = polygons_to_mask(lines, 64, 64)
    lab = _label(shift=1)
    assert _dice(lab == 2, back == 2) > 0.95


def test_export_errors(tmp_path):
    img, lab = np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.int64)
    with pytest.raises(ValueError, match="train"):
        export_yolo_dataset({"val": [("a", img, lab)]}, tmp_path, ["x"])
    with pytest.raises(ValueError, match=r"\[7\]"):
        export_yolo_dataset({"train": [("a", img, lab + 7)]}, tmp_path, ["x"])
    with pytest.raises(ValueError, match="float32"):
        export_yolo_dataset({"train": [("a", img.astype(np.float32), lab)]}, tmp_path, ["x"])
    with pytest.raises(ValueError, match="duplicate"):
        export_yolo_dataset({"train": [("a", img, lab), ("a", img, lab)]}, tmp_path, ["x"])
    with pytest.raises(ValueError, match="cls x1 y1"):
        polygons_to_mask(["0 0.1 0.2"], 8, 8)


def test_labels_from_instances():
    from traditional_models.yolo import labels_from_instances

    masks = np.zeros((2, 4, 4), bool)
    masks[0, :2] = True
    masks[1, 1:3] = True
    out = labels_from_instances(masks, np.array([0, 1]), np.array([0.9, 0.5]), label_ids=[3, 7])
    assert out[:, 0].tolist() == [3, 3, 7, 0]  # the higher score wins the overlap row


def test_tiny_yolo_train_and_predict_offline(tmp_path, monkeypatch):
    pytest.importorskip("ultralytics")
    monkeypatch.setenv("YOLO_OFFLINE", "1")
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "yolo_cfg"))
    from traditional_models.yolo import labels_from_instances, predict_masks, train_yolo

    samples = list(_samples(4))
    data_yaml = export_yolo_dataset(
        {"train": samples[:3], "val": samples[3:]}, tmp_path / "ds", ["ring", "box"]
    )
    weights = train_yolo(
        data_yaml, tmp_path / "runs", image_size=64, epochs=1, batch=2, device="cpu", workers=0
    )
    assert weights.is_file() and weights.suffix == ".pt"
    preds = predict_masks(weights, [s[1] for s in samples[:2]], image_size=64, conf=0.0)
    assert len(preds) == 2
    for p in preds:
        assert p.masks.ndim == 3 and p.masks.shape[1:] == (64, 64) and p.masks.dtype == bool
        assert p.classes.shape == p.scores.shape == (p.masks.shape[0],)
        labels = labels_from_instances(p.masks, p.classes, p.scores, label_ids=[1, 2], shape=(64, 64))
        assert labels.shape == (64, 64) and set(np.unique(labels)) <= {0, 1, 2}
