"""Prompts from ground-truth masks, shared by every model (numpy only).

Coordinates (docs/DESIGN.md): boxes ``[x0, y0, x1, y1]`` and clicks ``(x, y)`` in pixels, x = column,
y = row; box corners are pixel centres of the extreme object pixels (inclusive).

``prompt`` config keys (conf/prompt/*.yaml):
  type: box | click | mask | none
  jitter_px: box corner noise bound in pixels; jitter_frac: ... as a fraction of the box side
      (each corner moves uniformly within +-(jitter_px + jitter_frac * side)); the box is clipped.
  n_pos / n_neg: positive / negative clicks (the first positive is the object's innermost pixel).
  freq: in 3D, prompt every ``freq``-th slice containing the object counted from the key slice
      (0 or null: key slice only).
  key_slice: largest (slice of largest area) | middle (middle of the object's z extent).
  empty: skip | negative. Objects absent from an image (or clip) are dropped (skip) or kept with an
      empty mask, a zero box and ``max(n_neg, 1)`` negative clicks (negative).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.ndimage import distance_transform_edt

from medseg.data.datasets.base import to_plain
from medseg.errors import DataError
from medseg.options import check_options, opt

EMPTY_MODES = ("skip", "negative")
KEY_SLICE = ("largest", "middle")


class PromptKind:
    """What one prompt type means to every consumer: what it draws from a reference mask and which inputs
    reach the model. Made once from ``prompt.type`` (:attr:`PromptConfig.kind`); no other code compares
    the type string. To add a prompt type, subclass this and register an instance in :data:`KINDS`."""

    name = ""
    box = False  # a box reaches the prompt encoder
    clicks = False  # clicks are drawn (prompt.n_pos / n_neg)
    mask = False  # the reference mask is the (dense) prompt
    automatic = False  # no prompt: every declared class is predicted
    unambiguous = False  # one mask suffices (box, mask); otherwise SAM's multimask rule applies

    def draw(self, out: dict, mask: np.ndarray, cfg: PromptConfig, rng: np.random.Generator) -> None:
        """Fill the prompt dict ``out`` (see :func:`object_prompt`) for a non-empty ``mask``."""

    def describe(self, cfg: PromptConfig, jittered: bool) -> list[str]:
        """Parts of the evaluation protocol's id (:meth:`medseg.eval.evaluation.EvalProtocol.id`)."""
        return [self.name]


class BoxKind(PromptKind):
    name, box, unambiguous = "box", True, True

    def draw(self, out, mask, cfg, rng):
        out["box"] = box_from_mask(mask, cfg.jitter_px, cfg.jitter_frac, rng)

    def describe(self, cfg, jittered):
        return ["box", f"jitter{cfg.jitter_px:g}px+{cfg.jitter_frac:g}" if jittered else "tight"]


class ClickKind(PromptKind):
    name, clicks = "click", True

    def draw(self, out, mask, cfg, rng):
        out["points"], out["point_labels"] = clicks_from_mask(mask, cfg.n_pos, cfg.n_neg, rng)

    def describe(self, cfg, jittered):
        return ["click", f"{cfg.n_pos}pos{cfg.n_neg}neg"]


class MaskKind(PromptKind):
    name, mask, unambiguous = "mask", True, True

    def draw(self, out, mask, cfg, rng):
        out["mask_prompt"] = mask.astype(np.float32)

    def describe(self, cfg, jittered):
        return ["mask", "reference"]


class NoPromptKind(PromptKind):
    name, automatic = "none", True

    def describe(self, cfg, jittered):
        return ["none", "declared-classes"]


KINDS: dict[str, PromptKind] = {k.name: k for k in (BoxKind(), ClickKind(), MaskKind(), NoPromptKind())}
PROMPT_TYPES = tuple(KINDS)


@dataclass
class PromptConfig:
    """``prompt.*`` (the schema of ``conf/prompt``; the presets there say only what differs)."""

    type: str = "box"  # one of KINDS (checked by validate: a registered kind may be added)
    jitter_px: float = opt(0.0, ge=0)
    jitter_frac: float = opt(0.0, ge=0)
    n_pos: int = opt(1, ge=0)
    n_neg: int = opt(0, ge=0)
    freq: int | None = opt(None, kind="int", ge=0)
    key_slice: str = opt("largest", choices=KEY_SLICE)
    empty: str = opt("skip", choices=EMPTY_MODES)

    @classmethod
    def from_cfg(cls, cfg: Any) -> PromptConfig:
        """From a ``prompt`` config (dict/DictConfig/PromptConfig); unknown keys are ignored."""
        if isinstance(cfg, cls):
            return cfg
        cfg = dict(to_plain(cfg) or {})
        known = {k: cfg[k] for k in cls.__dataclass_fields__ if k in cfg}
        out = cls(**known)
        out.validate()
        return out

    @property
    def kind(self) -> PromptKind:
        """The strategy of ``type`` (validated)."""
        return KINDS[self.type]

    def validate(self) -> None:
        if self.type not in PROMPT_TYPES:
            raise DataError(f"prompt.type: '{self.type}' is not one of {list(PROMPT_TYPES)}")
        try:
            check_options(self, "prompt")
        except ValueError as e:
            raise DataError(str(e)) from None
        if self.kind.clicks and self.n_pos + self.n_neg == 0:
            raise DataError("prompt.n_pos: click prompts need n_pos + n_neg >= 1")


def box_from_mask(
    mask: np.ndarray, jitter_px: float = 0.0, jitter_frac: float = 0.0, rng: np.random.Generator | None = None
) -> np.ndarray | None:
    """Bounding box ``[x0, y0, x1, y1]`` (float32) of a binary (H, W) mask, or None if empty."""
    mask = np.asarray(mask, bool)
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float64)
    if jitter_px > 0 or jitter_frac > 0:
        rng = rng or np.random.default_rng()
        w, h = box[2] - box[0] + 1, box[3] - box[1] + 1
        amp = np.array([jitter_px + jitter_frac * w, jitter_px + jitter_frac * h] * 2)
        box = box + rng.uniform(-1, 1, 4) * amp
    hgt, wid = mask.shape
    box = np.clip(box, 0, [wid - 1, hgt - 1, wid - 1, hgt - 1])
    x0, x1 = sorted(box[[0, 2]])
    y0, y1 = sorted(box[[1, 3]])
    return np.array([x0, y0, x1, y1], np.float32)


def clicks_from_mask(
    mask: np.ndarray, n_pos: int = 1, n_neg: int = 0, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Clicks on a binary (H, W) mask.

    The first positive click is the innermost object pixel (max distance to the border), the others are
    random object pixels; negatives are random background pixels, preferably within the object's box
    grown by half its size (informative), else anywhere. Fewer clicks come back when there are not
    enough pixels of a kind.

    Returns:
        points float32 (P, 2) as (x, y), labels int64 (P,) with 1 positive, 0 negative.
    """
    rng = rng or np.random.default_rng()
    mask = np.asarray(mask, bool)
    pts, labels = [], []
    ys, xs = np.nonzero(mask)
    if n_pos > 0 and ys.size:
        dist = distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
        cy, cx = np.unravel_index(int(np.argmax(dist)), mask.shape)
        pts.append((cx, cy))
        if n_pos > 1:
            idx = rng.choice(ys.size, size=min(n_pos - 1, ys.size), replace=False)
            pts += [(xs[i], ys[i]) for i in idx]
        labels += [1] * (len(pts))
    if n_neg > 0:
        bg = ~mask
        if ys.size:
            h, w = mask.shape
            y0, y1, x0, x1 = ys.min(), ys.max(), xs.min(), xs.max()
            gy, gx = (y1 - y0 + 1) // 2 + 1, (x1 - x0 + 1) // 2 + 1
            near = np.zeros_like(bg)
            near[max(0, y0 - gy) : min(h, y1 + gy + 1), max(0, x0 - gx) : min(w, x1 + gx + 1)] = True
            if (near & bg).sum() >= n_neg:
                bg = near & bg
        nys, nxs = np.nonzero(bg)
        if nys.size:
            idx = rng.choice(nys.size, size=min(n_neg, nys.size), replace=False)
            pts += [(nxs[i], nys[i]) for i in idx]
            labels += [0] * len(idx)
    return np.asarray(pts, np.float32).reshape(-1, 2), np.asarray(labels, np.int64)


def object_prompt(
    mask: np.ndarray, cfg: Any, rng: np.random.Generator | None = None, obj_id: int | None = None
) -> dict | None:
    """Prompt for one object on one (H, W) image.

    Returns:
        {"obj_id", "mask" bool (H,W), "empty" bool, "box" float32 (4,) (zeros when unused or empty),
        "points" float32 (P,2), "point_labels" int64 (P,), "mask_prompt" float32 (H,W) (zeros unless
        type is mask)}, or None for an empty object under ``empty: skip`` (the automatic mode keeps it).
    """
    cfg = PromptConfig.from_cfg(cfg)
    rng = rng or np.random.default_rng()
    mask = np.asarray(mask, bool)
    empty = not mask.any()
    out = {
        "obj_id": obj_id,
        "mask": mask,
        "empty": empty,
        "box": np.zeros(4, np.float32),
        "points": np.zeros((0, 2), np.float32),
        "point_labels": np.zeros(0, np.int64),
        "mask_prompt": np.zeros(mask.shape, np.float32),
    }
    if empty:
        if cfg.kind.automatic:  # nothing to draw: the class is predicted anyway and scored against nothing
            return out
        if cfg.empty == "skip":
            return None
        out["points"], out["point_labels"] = clicks_from_mask(mask, 0, max(cfg.n_neg, 1), rng)
        return out
    cfg.kind.draw(out, mask, cfg, rng)
    return out


def prompts_for_objects(
    label: np.ndarray, obj_ids: list[int], cfg: Any, rng: np.random.Generator | None = None
) -> list[dict]:
    """:func:`object_prompt` for several objects of one (H, W) label map at once (skipped ones dropped)."""
    rng = rng or np.random.default_rng()
    label = np.asarray(label)
    out = [object_prompt(label == i, cfg, rng, obj_id=int(i)) for i in obj_ids]
    return [p for p in out if p is not None]


def key_slice(mask3d: np.ndarray, how: str = "largest") -> int | None:
    """Key slice of an object in a binary (D, H, W) mask: largest area or middle of its z extent."""
    area = np.asarray(mask3d, bool).reshape(len(mask3d), -1).sum(1)
    zs = np.flatnonzero(area)
    if zs.size == 0:
        return None
    if how == "largest":
        return int(np.argmax(area))
    if how == "middle":
        mid = (zs[0] + zs[-1]) / 2
        return int(zs[np.argmin(np.abs(zs - mid))])  # nearest slice that holds the object
    raise DataError(f"prompt.key_slice: '{how}' is not one of {list(KEY_SLICE)}")


def prompt_slices(mask3d: np.ndarray, freq: int | None = None, how: str = "largest") -> list[int]:
    """Slices to prompt: the key slice, plus every ``freq``-th object slice counted from it."""
    k = key_slice(mask3d, how)
    if k is None:
        return []
    if not freq:
        return [k]
    zs = list(np.flatnonzero(np.asarray(mask3d, bool).reshape(len(mask3d), -1).any(1)))
    i = zs.index(k)
    return sorted(int(z) for j, z in enumerate(zs) if (j - i) % int(freq) == 0)


def prompts_3d(
    label3d: np.ndarray, obj_ids: list[int], cfg: Any, rng: np.random.Generator | None = None
) -> dict[int, dict[int, dict]]:
    """{obj_id: {z: prompt}} for a (D, H, W) label: prompts on the slices of :func:`prompt_slices`.

    An object absent from the whole volume gets ``{key: negative prompt on slice D // 2}`` under
    ``empty: negative`` and is left out under ``skip``.
    """
    cfg = PromptConfig.from_cfg(cfg)
    rng = rng or np.random.default_rng()
    label3d = np.asarray(label3d)
    out: dict[int, dict[int, dict]] = {}
    for oid in obj_ids:
        m = label3d == oid
        zs = prompt_slices(m, cfg.freq, cfg.key_slice)
        if not zs:
            if cfg.empty == "negative":
                z = len(m) // 2
                out[int(oid)] = {z: object_prompt(m[z], cfg, rng, obj_id=int(oid))}
            continue
        out[int(oid)] = {z: object_prompt(m[z], cfg, rng, obj_id=int(oid)) for z in zs}
    return out
