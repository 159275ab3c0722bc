"""Raw case -> model input: intensity to [0, 1], resize, MONAI augmentations, ImageNet normalisation.

Intensity (``dataset.intensity``):
  * ``modality: ct``: ``window: abdomen|mediastinum|lung|bone|brain`` or ``[lo, hi]`` in HU; clip, scale.
  * ``modality: mri``: clip to ``percentile: [0.5, 99.5]`` of the case, z-score (mean/std of the clipped
    case, as nnU-Net normalises MRI), then ``z_range: 3`` standard deviations either side of the mean map
    linearly to [0, 1] (the case mean is 0.5, one std is 1/6); values beyond are clipped.
  * ``modality: rgb``: /255 (also for grey uint8 images, e.g. BTCV jpgs and MedSAM2 npz).
  * ``modality: minmax``: per-case min-max; ``modality: none``: values already in [0, 1] (clipped).

Resize: the image goes to ``image_size x image_size`` (no aspect preservation, like SAM2's own loader;
or, with ``resize="longest_side"`` from a model's ``preprocess``, longest side to ``image_size`` and
zero padding at the bottom/right, like SAM's predictor) with bilinear interpolation and ``antialias=True`` (a proper low-pass when shrinking); labels use
``nearest-exact``. Augmentations (``augment_cfg``: list of ``_target_`` MONAI dictionary transforms, keys
``image``/``label``) run on the resized [0, 1] image, channel-first with slices folded into channels, so
every slice of a volume gets the same spatial transform. Then grey is repeated to 3 channels and
normalised with ImageNet mean/std.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medseg.data.datasets.base import to_plain
from medseg.errors import DataError

CT_WINDOWS: dict[str, tuple[float, float]] = {  # level/width -> [lo, hi] HU
    "abdomen": (-160.0, 240.0),
    "mediastinum": (-125.0, 225.0),
    "lung": (-1350.0, 150.0),
    "bone": (-500.0, 1300.0),
    "brain": (0.0, 80.0),
}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Intensity:
    """Raw values -> float32 [0, 1] for one modality (``dataset.intensity``). Made once by
    :func:`parse_intensity`; no other code looks at the modality name. Subclasses: :class:`CTWindow`,
    :class:`MRIPercentile`, :class:`RGB255`, :class:`MinMax`, :class:`Clip01`, :class:`FixedWindow`.

    ``case_window(image)`` gives the whole-case statistics of a case-dependent mapping as a
    :class:`FixedWindow` (a training clip of a few slices must use the case's numbers, not its own, to
    match validation on the whole volume), or None when the mapping does not depend on the case.
    """

    modality = ""
    window: tuple[float, float] | None = None
    percentile: tuple[float, float] | None = None

    def apply(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def case_window(self, image: np.ndarray) -> FixedWindow | None:
        return None

    def __getitem__(self, key: str):  # read like the old {"modality", "window", "percentile"} spec
        return getattr(self, key)

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({vars(self)})"


class CTWindow(Intensity):
    """``modality: ct``: clip to a HU window (``window: abdomen|...`` or ``[lo, hi]``) and scale."""

    modality = "ct"

    def __init__(self, cfg: dict, key: str):
        w = cfg.get("window", "abdomen")
        if isinstance(w, str):
            if w.lower() not in CT_WINDOWS:
                raise DataError(f"{key}.window: '{w}' is not one of {sorted(CT_WINDOWS)} or [lo, hi]")
            self.window = CT_WINDOWS[w.lower()]
        else:
            try:
                lo, hi = (float(v) for v in w)
            except (TypeError, ValueError) as exc:
                raise DataError(f"{key}.window: expected a name or [lo, hi], got {w!r}") from exc
            if not hi > lo:
                raise DataError(f"{key}.window: need lo < hi, got [{lo}, {hi}]")
            self.window = (lo, hi)

    def apply(self, x):
        lo, hi = self.window
        return np.clip((x - lo) / (hi - lo), 0.0, 1.0)


class MRIPercentile(Intensity):
    """``modality: mri``: clip to ``percentile: [lo, hi]`` of the case, z-score with the clipped case's
    mean and std, then ``z_range`` std either side of the mean -> [0, 1] (mean 0.5; a constant case is 0.5).

    The z-score survives the mapping to [0, 1]: the output depends on the case's mean and spread, not on
    its extremes (a min-max after the z-score would undo it).
    """

    modality = "mri"

    def __init__(self, cfg: dict, key: str):
        p = cfg.get("percentile", [0.5, 99.5])
        try:
            lo, hi = (float(v) for v in p)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{key}.percentile: expected [lo, hi], got {p!r}") from exc
        if not 0 <= lo < hi <= 100:
            raise DataError(f"{key}.percentile: need 0 <= lo < hi <= 100, got [{lo}, {hi}]")
        self.percentile = (lo, hi)
        z = cfg.get("z_range", 3.0)
        try:
            self.z_range = float(z)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{key}.z_range: expected a number of standard deviations, got {z!r}") from exc
        if not self.z_range > 0:
            raise DataError(f"{key}.z_range: must be > 0, got {self.z_range}")

    def apply(self, x):
        return self.case_window(x).apply(x)

    def case_window(self, image):
        x = np.asarray(image, np.float32)
        lo, hi = (float(v) for v in np.percentile(x, self.percentile))
        clipped = np.clip(x, lo, hi).astype(np.float64)
        mean, std = float(clipped.mean()), float(clipped.std())
        half = self.z_range * std
        return FixedWindow((mean - half, mean + half), clip=(lo, hi))


class RGB255(Intensity):
    """``modality: rgb``: /255 (also grey uint8 images, e.g. BTCV jpgs and MedSAM2 npz)."""

    modality = "rgb"

    def __init__(self, cfg: dict | None = None, key: str = ""):
        pass

    def apply(self, x):
        return np.clip(x / 255.0, 0.0, 1.0)


class MinMax(Intensity):
    """``modality: minmax``: per-case min-max."""

    modality = "minmax"

    def __init__(self, cfg: dict | None = None, key: str = ""):
        pass

    def apply(self, x):
        return _minmax(x)

    def case_window(self, image):
        x = np.asarray(image, np.float32)
        return FixedWindow((float(x.min()), float(x.max())))


class Clip01(Intensity):
    """``modality: none``: values already in [0, 1] (clipped)."""

    modality = "none"

    def __init__(self, cfg: dict | None = None, key: str = ""):
        pass

    def apply(self, x):
        return np.clip(x, 0.0, 1.0)


class FixedWindow(Intensity):
    """A fixed linear window (a case's statistics, from :meth:`Intensity.case_window`), after an optional
    ``clip`` of the raw values; a degenerate window gives 0.5 (MRI: a constant case) or 0 (min-max)."""

    modality = "window"

    def __init__(self, window: tuple[float, float], clip: tuple[float, float] | None = None):
        self.window = (float(window[0]), float(window[1]))
        self.clip = None if clip is None else (float(clip[0]), float(clip[1]))

    def apply(self, x):
        x = np.asarray(x, np.float32)
        if self.clip is not None:
            x = np.clip(x, *self.clip)
        lo, hi = self.window
        if hi - lo < 1e-8:
            return np.full_like(x, 0.5 if self.clip is not None else 0.0)
        return np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


INTENSITIES: dict[str, type[Intensity]] = {
    c.modality: c for c in (CTWindow, MRIPercentile, RGB255, MinMax, Clip01)
}
MODALITIES = tuple(INTENSITIES)


def parse_intensity(cfg: Any, key: str = "dataset.intensity") -> Intensity:
    """The :class:`Intensity` of a ``dataset.intensity`` config (validated; errors name ``key``)."""
    if isinstance(cfg, Intensity):
        return cfg
    cfg = dict(to_plain(cfg) or {})
    modality = str(cfg.get("modality", "rgb")).lower()
    if modality not in INTENSITIES:
        raise DataError(f"{key}.modality: '{modality}' is not one of {list(MODALITIES)}")
    return INTENSITIES[modality](cfg, key)


def apply_intensity(image: np.ndarray, spec: Intensity) -> np.ndarray:
    """Map raw values to float32 [0, 1] with ``spec`` (an :class:`Intensity`)."""
    return parse_intensity(spec).apply(np.asarray(image, np.float32))


def volume_window(image: np.ndarray, spec: Intensity) -> FixedWindow | None:
    """:meth:`Intensity.case_window` of a whole case (None for CT windows, RGB, none)."""
    return parse_intensity(spec).case_window(image)


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return np.zeros_like(x) if hi - lo < 1e-8 else ((x - lo) / (hi - lo)).astype(np.float32)


def build_augment(augment_cfg: Any, seed: int | None = None) -> Callable | None:
    """Compose MONAI dictionary transforms from a list (or {name: cfg} dict) of ``_target_`` configs."""
    from hydra.utils import instantiate

    if augment_cfg is None:
        return None
    items = (
        augment_cfg.values()
        if hasattr(augment_cfg, "values") and not isinstance(augment_cfg, list)
        else augment_cfg
    )
    transforms = [instantiate(c) for c in items if c is not None]
    if not transforms:
        return None
    from monai.transforms import Compose

    comp = Compose(transforms)
    if seed is not None:
        comp.set_random_state(seed=seed)
    return comp


def _plain(t: Any) -> torch.Tensor:
    """MONAI MetaTensor / numpy -> plain torch tensor."""
    t = t.as_tensor() if hasattr(t, "as_tensor") else torch.as_tensor(t)
    return t


def _square(h: int, w: int, s: int) -> tuple[int, int]:
    return s, s


def _longest_side(h: int, w: int, s: int) -> tuple[int, int]:
    scale = s / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


# model.preprocess.resize -> (H, W, S) -> resized (h, w); anything smaller than S x S is zero-padded
# at the bottom/right (after normalisation, as SAM's predictor pads), labels with background
RESIZE: dict[str, Callable[[int, int, int], tuple[int, int]]] = {
    "square": _square,  # stretched to S x S (SAM2's loader, MedSAM)
    "longest_side": _longest_side,  # aspect kept, longest side S (SAM's ResizeLongestSide)
}


class CaseTransform:
    """Callable raw case -> model input (see :func:`build_transform`)."""

    def __init__(
        self, intensity: dict, image_size: int, augment: Callable | None = None, resize: str = "square"
    ):
        if resize not in RESIZE:
            raise DataError(f"model.preprocess.resize: '{resize}' is not one of {sorted(RESIZE)}")
        self.intensity, self.image_size, self.augment = intensity, int(image_size), augment
        self.resize = RESIZE[resize]
        self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def __call__(self, case: dict) -> dict:
        image = np.asarray(case["image"])
        if image.ndim == 2:  # a bare (H, W) slice
            image = image[None]
        if image.ndim not in (3, 4):
            raise DataError(
                f"{case.get('case_id', '?')}: image must be (D,H,W) or (D,H,W,3), got {image.shape}"
            )
        d, h, w = image.shape[:3]
        x = torch.from_numpy(apply_intensity(image, case.get("intensity_window") or self.intensity))
        x = x.permute(0, 3, 1, 2) if x.ndim == 4 else x[:, None]  # (D, C, H, W)
        s = self.image_size
        th, tw = self.resize(h, w, s)
        x = F.interpolate(x, size=(th, tw), mode="bilinear", antialias=True, align_corners=False).clamp_(0, 1)
        label = case.get("label")
        y = None
        if label is not None:
            lab = np.asarray(label)
            lab = lab[None] if lab.ndim == 2 else lab
            if lab.shape != (d, h, w):
                raise DataError(
                    f"{case.get('case_id', '?')}: label shape {lab.shape} != image shape {(d, h, w)}"
                )
            y = (
                F.interpolate(
                    torch.from_numpy(lab.astype(np.float32))[:, None], size=(th, tw), mode="nearest-exact"
                )[:, 0]
                .round()
                .long()
            )
        if self.augment is not None:
            c = x.shape[1]
            data = {"image": x.reshape(d * c, th, tw)}
            if y is not None:
                data["label"] = y.float()
            data = self.augment(data)
            x = _plain(data["image"]).reshape(d, c, th, tw).float().clamp(0, 1)
            if y is not None:
                y = _plain(data["label"]).round().long().reshape(d, th, tw)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = ((x - self.mean) / self.std).contiguous()
        if (th, tw) != (s, s):
            x = F.pad(x, (0, s - tw, 0, s - th))
            y = F.pad(y, (0, s - tw, 0, s - th)) if y is not None else None
        sz, sy, sx = case.get("spacing", (1.0, 1.0, 1.0))
        out = {k: v for k, v in case.items() if k not in ("image", "label")}
        out.update(
            image=x.float(),
            label=y,
            spacing=(float(sz), float(sy) * h / th, float(sx) * w / tw),
            orig_shape=(d, h, w),
            valid_hw=(th, tw),
        )
        return out


def build_transform(
    intensity_cfg: Any,
    image_size: int,
    augment_cfg: Any = None,
    *,
    seed: int | None = None,
    resize: str = "square",
) -> CaseTransform:
    """Build the case transform.

    Args:
        intensity_cfg: ``dataset.intensity`` (see module docstring).
        image_size: output side S.
        augment_cfg: optional list of MONAI dict transform configs with ``_target_`` (training only).
        seed: optional seed for the augmentations' random state.
        resize: ``square`` (stretch to S x S) or ``longest_side`` (keep the aspect, pad to S x S); a
            model's choice (``model.preprocess.resize``).

    Returns:
        Callable on a raw case dict (or one slice of it) returning ``image`` float32 (D, 3, S, S)
        ImageNet-normalised, ``label`` int64 (D, S, S) or None, ``spacing`` of the resized grid
        (sz, sy*H/h, sx*W/w), ``orig_shape`` (D, H, W), ``valid_hw`` (h, w) (the image part of the
        S x S grid, the rest is padding) and the other keys of the case unchanged.
    """
    if int(image_size) <= 0:
        raise DataError(f"image_size: must be positive, got {image_size}")
    return CaseTransform(
        parse_intensity(intensity_cfg), int(image_size), build_augment(augment_cfg, seed), resize=resize
    )
