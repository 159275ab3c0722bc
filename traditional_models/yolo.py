"""Ultralytics YOLO segmentation baseline, run fully offline.

Training uses Ultralytics' own loop on a dataset written by
:func:`traditional_models.yolo_export.export_yolo_dataset`; prediction returns instance masks at the
input resolution, which :func:`labels_from_instances` merges into a label map scored by
``medseg.eval.metrics``. Models are built from an architecture yaml (``yolo11n-seg.yaml`` ... random init)
or loaded from a local ``.pt``; nothing is ever downloaded: ``YOLO_OFFLINE=1`` is set (unless already
set) and ``YOLO_CONFIG_DIR`` defaults to a temporary folder before ``ultralytics`` is imported.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

__all__ = ["YoloPrediction", "YoloSeg", "labels_from_instances", "predict_masks", "train_yolo"]


def _offline_env() -> None:
    os.environ.setdefault("YOLO_OFFLINE", "1")
    if "YOLO_CONFIG_DIR" not in os.environ:
        os.environ["YOLO_CONFIG_DIR"] = tempfile.mkdtemp(prefix="yolo_cfg_")


def check_yolo_weights(path: str | Path, key: str = "model.net.weights") -> Path:
    """Refuse a YOLO ``.pt`` that would run code when ultralytics unpickles it (see :mod:`medseg.train.pickle_guard`)."""
    from medseg.train.pickle_guard import check_model_pickle

    _offline_env()
    return check_model_pickle(path, key)


def _yolo(model: str | Path) -> Any:
    """An ``ultralytics.YOLO`` from an architecture yaml name/path or a local weights file (checked first)."""
    _offline_env()
    try:
        from ultralytics import YOLO
    except ImportError as err:  # optional dependency
        raise ImportError("the YOLO baseline needs `ultralytics` (pip install '.[baselines]')") from err
    model = str(model)
    if model.endswith((".pt", ".pth")):
        if not Path(model).is_file():
            raise FileNotFoundError(f"YOLO weights not found: {model}")
        check_yolo_weights(model)
    elif not model.endswith((".yaml", ".yml")):
        raise ValueError(f"YOLO model must be an architecture .yaml or a local .pt file, got {model!r}")
    return YOLO(model, task="segment")


def train_yolo(
    data_yaml: str | Path,
    out_dir: str | Path,
    image_size: int,
    epochs: int,
    batch: int,
    device: str | int = "cpu",
    workers: int = 0,
    *,
    model: str | Path = "yolo11n-seg.yaml",
    **overrides: Any,
) -> Path:
    """Train a YOLO segmentation model; return the path of its best weights (``.../weights/best.pt``).

    Args:
        data_yaml: dataset yaml from ``export_yolo_dataset``.
        out_dir: Ultralytics ``project`` folder; the run is ``out_dir/train``.
        image_size: training image size (``imgsz``).
        epochs: number of epochs.
        batch: batch size.
        device: ``"cpu"``, ``0``, ``"cuda:0"`` ...
        workers: dataloader workers.
        model: architecture yaml (random init) or local ``.pt`` to fine-tune.
        **overrides: further ``model.train`` arguments (e.g. ``lr0``, ``seed``).
    """
    data_yaml = Path(data_yaml)
    if not data_yaml.is_file():
        raise FileNotFoundError(f"YOLO data yaml not found: {data_yaml}")
    for name, value in (("image_size", image_size), ("epochs", epochs), ("batch", batch)):
        if int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value!r}")
    yolo = _yolo(model)
    args = {
        "data": str(data_yaml),
        "imgsz": int(image_size),
        "epochs": int(epochs),
        "batch": int(batch),
        "device": device,
        "workers": int(workers),
        "project": str(Path(out_dir).resolve()),
        "name": "train",
        "exist_ok": True,
        "pretrained": False,
        "amp": False,  # the AMP check downloads weights
        "plots": False,  # plotting may fetch fonts
        "verbose": False,
    } | overrides
    yolo.train(**args)
    save_dir = Path(yolo.trainer.save_dir)
    for name in ("best.pt", "last.pt"):
        if (save_dir / "weights" / name).is_file():
            return save_dir / "weights" / name
    raise RuntimeError(f"YOLO training wrote no weights under {save_dir / 'weights'}")


class YoloPrediction(NamedTuple):
    """Instances of one image: ``masks (K, H, W) bool``, ``classes (K,) int`` (YOLO index), ``scores (K,)``."""

    masks: np.ndarray
    classes: np.ndarray
    scores: np.ndarray


def predict_masks(
    weights: str | Path,
    images_uint8: Sequence[np.ndarray],
    image_size: int,
    conf: float = 0.25,
    *,
    device: str | int = "cpu",
    batch: int = 8,
) -> list[YoloPrediction]:
    """Instance masks at each input's own resolution.

    Args:
        weights: local ``.pt`` (or an architecture yaml for an untrained smoke test).
        images_uint8: ``uint8 (H, W, 3)`` RGB (or ``(H, W)`` grey) images.
        image_size: inference size (``imgsz``).
        conf: confidence threshold in [0, 1].
        device: inference device.
        batch: images per ``predict`` call.

    Returns:
        One :class:`YoloPrediction` per image (``masks (K, H, W)``, ``classes (K,)``, ``scores (K,)``).
    """
    import cv2

    if not 0.0 <= float(conf) <= 1.0:
        raise ValueError(f"conf must be in [0, 1], got {conf!r}")
    yolo = _yolo(weights)
    bgr = []
    for n, img in enumerate(images_uint8):
        img = np.asarray(img)
        if img.dtype != np.uint8 or img.ndim not in (2, 3):
            raise ValueError(f"image {n} must be uint8 (H, W[, 3]), got {img.dtype} {img.shape}")
        img = np.repeat(img[..., None], 3, -1) if img.ndim == 2 else img
        bgr.append(cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR))
    out: list[YoloPrediction] = []
    for start in range(0, len(bgr), max(1, int(batch))):
        chunk = bgr[start : start + max(1, int(batch))]
        results = yolo.predict(
            chunk, imgsz=int(image_size), conf=float(conf), retina_masks=True, device=device, verbose=False
        )
        for img, res in zip(chunk, results):
            h, w = img.shape[:2]
            if res.masks is None or len(res.boxes) == 0:
                out.append(
                    YoloPrediction(np.zeros((0, h, w), bool), np.zeros(0, np.int64), np.zeros(0, np.float32))
                )
                continue
            masks = res.masks.data.cpu().numpy() > 0.5
            if masks.shape[1:] != (h, w):  # defensive: retina masks are at the input size
                masks = np.stack(
                    [
                        cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST) > 0
                        for m in masks
                    ]
                )
            out.append(
                YoloPrediction(
                    masks,
                    res.boxes.cls.cpu().numpy().astype(np.int64),
                    res.boxes.conf.cpu().numpy().astype(np.float32),
                )
            )
    return out


def labels_from_instances(
    masks: np.ndarray,
    classes: np.ndarray,
    scores: np.ndarray | None = None,
    *,
    label_ids: Sequence[int] | None = None,
    shape: tuple[int, int] | None = None,
) -> np.ndarray:
    """Merge instance masks into one label map ``(H, W)`` int64.

    Higher-score instances win where instances overlap. YOLO class index ``i`` becomes ``label_ids[i]``
    (``data.yaml: label_ids``), or ``i + 1`` when ``label_ids`` is None.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"masks must be (K, H, W), got {masks.shape}")
    h, w = shape if masks.shape[0] == 0 and shape is not None else masks.shape[1:]
    out = np.zeros((h, w), dtype=np.int64)
    classes = np.asarray(classes, dtype=np.int64)
    if len(classes) != len(masks):
        raise ValueError(f"{len(masks)} masks but {len(classes)} classes")
    order = np.argsort(scores, kind="stable") if scores is not None else np.arange(len(masks))
    for k in order:  # ascending score: the best is painted last
        c = int(classes[k])
        if label_ids is not None and not 0 <= c < len(label_ids):
            raise ValueError(f"YOLO class {c} has no entry in label_ids {list(label_ids)}")
        out[masks[k]] = label_ids[c] if label_ids is not None else c + 1
    return out


class YoloSeg:
    """Config holder for the YOLO baseline (``conf/model/yolo_seg.yaml``); not an ``nn.Module``.

    Args:
        yolo_cfg: architecture yaml (``yolo11n-seg.yaml`` ... ``yolo11l-seg.yaml``), random init.
        weights: local ``.pt``; when given it is used instead of ``yolo_cfg``.
        image_size, epochs, batch, workers: training settings.
        conf: prediction confidence threshold.
    """

    def __init__(
        self,
        *,
        yolo_cfg: str = "yolo11n-seg.yaml",
        weights: str | None = None,
        image_size: int = 512,
        epochs: int = 100,
        batch: int = 16,
        workers: int = 0,
        conf: float = 0.25,
    ) -> None:
        if weights is None and not str(yolo_cfg).endswith((".yaml", ".yml")):
            raise ValueError(f"yolo_cfg must be a YOLO segmentation .yaml, got {yolo_cfg!r}")
        if weights is not None and not Path(weights).is_file():
            raise FileNotFoundError(f"YOLO weights not found: {weights}")
        if weights is not None:  # refused here, at start-up, before ultralytics ever unpickles it
            check_yolo_weights(weights)
        if not 0.0 <= float(conf) <= 1.0:
            raise ValueError(f"conf must be in [0, 1], got {conf!r}")
        self.model = str(weights) if weights is not None else str(yolo_cfg)
        self.image_size, self.epochs, self.batch = int(image_size), int(epochs), int(batch)
        self.workers, self.conf = int(workers), float(conf)

    def use_checkpoint(self, path: str | Path) -> None:
        """Evaluate/continue from ``model.checkpoint``: a YOLO ``.pt`` or our ``checkpoint_*.pth`` of a YOLO run
        (which names the ``yolo_best.pt`` kept beside it)."""
        path = Path(path)
        if path.suffix == ".pth":
            from medseg.train.checkpoint import read_checkpoint

            ck = read_checkpoint(path)
            name = (ck.get("task") or {}).get("yolo_weights") or ck.get("yolo_weights")  # or the older layout
            if not str(ck.get("format", "")).startswith("sam2-medical") or not name:
                raise ValueError(f"{path}: model.checkpoint is not a checkpoint of a YOLO run of this suite")
            path = path.parent / str(name)
            if not path.is_file():
                raise FileNotFoundError(f"{path}: the YOLO weights named by model.checkpoint are missing")
        check_yolo_weights(path, "model.checkpoint")
        self.model = str(path)

    @property
    def weights_file(self) -> str | None:
        """The ``.pt`` this model starts from, or None (architecture yaml: random init)."""
        return self.model if str(self.model).endswith(".pt") else None

    def train(
        self, data_yaml: str | Path, out_dir: str | Path, device: str | int = "cpu", **overrides: Any
    ) -> Path:
        """Train with this config; the trained weights become ``self.model``. Returns their path."""
        path = train_yolo(
            data_yaml, out_dir, self.image_size, self.epochs, self.batch, device, self.workers,
            model=self.model, **overrides,
        )  # fmt: skip
        self.model = str(path)
        return path

    def predict(self, images_uint8: Sequence[np.ndarray], device: str | int = "cpu") -> list[YoloPrediction]:
        """Instance predictions of the current model (see :func:`predict_masks`)."""
        return predict_masks(self.model, images_uint8, self.image_size, self.conf, device=device)
