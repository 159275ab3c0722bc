"""Small synthetic datasets written in the real on-disk layouts (tests, ``make demo``).

Shapes are learnable: bright/dark textured ellipses (2D) or ellipsoids drifting smoothly across slices
(3D) on a noisy background. Everything is deterministic given ``seed`` and fast at 64 px / 8-12 slices.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.ndimage import binary_dilation, binary_erosion, gaussian_filter

ORGAN_HU = (150, -80, 250, 90, 200, -30, 300, 120)


def _texture(rng: np.random.Generator, shape: tuple[int, ...], sigma: float = 2.0) -> np.ndarray:
    t = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma)
    return t / (t.std() + 1e-6)


def _ellipse(h: int, w: int, cy: float, cx: float, ry: float, rx: float, angle: float = 0.0) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    c, s = np.cos(angle), np.sin(angle)
    u, v = (xx - cx) * c + (yy - cy) * s, -(xx - cx) * s + (yy - cy) * c
    return (u / max(rx, 1e-3)) ** 2 + (v / max(ry, 1e-3)) ** 2 <= 1.0


def demo_affine() -> np.ndarray:
    """Non-RAS affine: spacing (0.8, 0.8, 2.5) mm, x/y flipped, rotated 0.2 rad about z, shifted."""
    c, s = np.cos(0.2), np.sin(0.2)
    aff = np.eye(4)
    aff[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag([-0.8, -0.8, 2.5])
    aff[:3, 3] = [120.0, 95.0, -300.0]
    return aff


def ct_volume(
    rng: np.random.Generator, depth: int, size: int, n_organs: int, organ_ids: list[int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """CT-like (D, H, W) int16 HU volume and uint8 label with ``n_organs`` drifting ellipsoids."""
    organ_ids = organ_ids or list(range(1, n_organs + 1))
    h = w = size
    body = _ellipse(h, w, h / 2, w / 2, 0.45 * h, 0.47 * w)
    hu = np.full((depth, h, w), -1000.0, np.float32)
    hu[:, body] = 40.0
    hu += 25.0 * _texture(rng, (depth, h, w), 1.5)
    label = np.zeros((depth, h, w), np.uint8)
    for n, oid in enumerate(organ_ids):
        z0, z1 = sorted(rng.uniform(0, depth, 2))
        zc, rz = ((z0 + z1) / 2, max((z1 - z0) / 2, depth * 0.3)) if depth > 1 else (0.0, 1.0)
        cy0, cx0 = rng.uniform(0.3, 0.7, 2) * size
        dy, dx = rng.uniform(-0.15, 0.15, 2) * size
        ry, rx = rng.uniform(0.08, 0.16, 2) * size
        mean_hu = ORGAN_HU[n % len(ORGAN_HU)]
        tex = _texture(rng, (depth, h, w), 1.0)
        for z in range(depth):
            f = 1.0 - ((z - zc) / rz) ** 2
            if f <= 0.05:
                continue
            t = (z - zc) / max(depth, 1)
            m = _ellipse(h, w, cy0 + dy * t, cx0 + dx * t, ry * np.sqrt(f), rx * np.sqrt(f), 0.3 * n) & body
            hu[z][m] = mean_hu + 20.0 * tex[z][m] + 10.0 * rng.standard_normal(int(m.sum()))
            label[z][m] = oid
    return np.clip(np.round(hu), -1024, 3071).astype(np.int16), label


def _window_u8(hu: np.ndarray, lo: float = -160, hi: float = 240) -> np.ndarray:
    return np.round(np.clip((hu.astype(np.float32) - lo) / (hi - lo), 0, 1) * 255).astype(np.uint8)


def write_nnunet(
    root: str | Path,
    n_cases: int = 3,
    depth: int = 10,
    size: int = 64,
    n_organs: int = 2,
    *,
    seed: int = 0,
    n_test: int = 1,
    style: str = "v2",
    affine: np.ndarray | None = None,
) -> Path:
    """nnU-Net v2 raw (``style="v2"``) or MSD (``style="msd"``) dataset in ``root`` (holds dataset.json)."""
    import nibabel as nib

    root = Path(root)
    rng = np.random.default_rng(seed)
    affine = demo_affine() if affine is None else affine
    for sub in ("imagesTr", "labelsTr", "imagesTs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    names = [f"organ{i}" for i in range(1, n_organs + 1)]
    training, test = [], []
    for i in range(n_cases + n_test):
        cid = f"case_{i:03d}"
        hu, lab = ct_volume(rng, depth, size, n_organs)
        img = nib.Nifti1Image(hu.transpose(2, 1, 0), affine)
        img.set_data_dtype(np.int16)
        img.header.set_qform(affine, 1)
        is_test = i >= n_cases
        fname = f"{cid}_0000.nii.gz" if style == "v2" else f"{cid}.nii.gz"
        nib.save(img, str(root / ("imagesTs" if is_test else "imagesTr") / fname))
        if is_test:
            test.append(f"./imagesTs/{fname}")
            continue
        seg = nib.Nifti1Image(lab.transpose(2, 1, 0), affine)
        seg.set_data_dtype(np.uint8)
        seg.header.set_qform(affine, 1)
        nib.save(seg, str(root / "labelsTr" / f"{cid}.nii.gz"))
        training.append({"image": f"./imagesTr/{fname}", "label": f"./labelsTr/{cid}.nii.gz"})
    if style == "v2":
        meta = {
            "channel_names": {"0": "CT"},
            "labels": {"background": 0, **{n: i + 1 for i, n in enumerate(names)}},
            "numTraining": n_cases,
            "file_ending": ".nii.gz",
            "name": "synthetic",
        }
    else:
        meta = {
            "name": "synthetic",
            "modality": {"0": "CT"},
            "labels": {"0": "background", **{str(i + 1): n for i, n in enumerate(names)}},
            "numTraining": n_cases,
            "numTest": n_test,
            "training": training,
            "test": test,
        }
    (root / "dataset.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return root


def write_btcv(
    root: str | Path,
    n_cases: int = 2,
    depth: int = 12,
    size: int = 64,
    *,
    seed: int = 0,
    n_test: int = 1,
    organ_ids: tuple[int, ...] = (1, 6, 2),
) -> Path:
    """Medical-SAM2 BTCV layout: ``{Training,Test}/{image,mask}/<case>/<k>.{jpg,npy}``, k from 0."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    for i in range(n_cases + n_test):
        split = "Test" if i >= n_cases else "Training"
        cid = f"img{i + 1:04d}"
        hu, lab = ct_volume(rng, depth, size, len(organ_ids), list(organ_ids))
        u8 = _window_u8(hu)
        (root / split / "image" / cid).mkdir(parents=True, exist_ok=True)
        (root / split / "mask" / cid).mkdir(parents=True, exist_ok=True)
        for k in range(depth):
            Image.fromarray(np.repeat(u8[k][..., None], 3, -1)).save(
                root / split / "image" / cid / f"{k}.jpg", quality=95
            )
            np.save(root / split / "mask" / cid / f"{k}.npy", lab[k].astype(np.int64))
    return root


def write_npz(
    root: str | Path, n_cases: int = 2, depth: int = 8, size: int = 64, n_organs: int = 2, *, seed: int = 0
) -> Path:
    """MedSAM2-style ``<case>.npz`` with ``imgs`` uint8 (D,H,W), ``gts`` (D,H,W), ``spacing`` (x, y, z)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n_cases):
        hu, lab = ct_volume(rng, depth, size, n_organs)
        np.savez_compressed(
            root / f"CT_synth_{i:03d}.npz", imgs=_window_u8(hu), gts=lab, spacing=np.array([0.8, 0.8, 2.5])
        )
    return root


def _save_jpeg_mask(mask: np.ndarray, path: Path) -> None:
    Image.fromarray((mask * 255).astype(np.uint8)).save(path, quality=90)


def write_refuge(root: str | Path, n: int = 4, size: int = 64, *, seed: int = 0, n_raters: int = 7) -> Path:
    """REFUGE layout with 7 noisy raters per case; cases spread over Training/Validation/Test-400."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    splits = ["Training-400", "Validation-400", "Test-400"]
    for i in range(n):
        split = splits[0] if i < max(1, n - 2) else splits[1 + (i - max(1, n - 2)) % 2]
        name = f"{dict(zip(splits, 'gVT'))[split]}{i + 1:04d}"
        d = root / split / name
        d.mkdir(parents=True, exist_ok=True)
        cy, cx = rng.uniform(0.4, 0.6, 2) * size
        rd = rng.uniform(0.18, 0.25) * size
        rc = rd * rng.uniform(0.4, 0.6)
        disc = _ellipse(size, size, cy, cx, rd, rd * 0.9)
        cup = _ellipse(size, size, cy, cx + 0.1 * rd, rc, rc * 0.9)
        fundus = _ellipse(size, size, size / 2, size / 2, 0.55 * size, 0.55 * size)
        tex = _texture(rng, (size, size), 2.0)
        rgb = np.zeros((size, size, 3), np.float32)
        rgb[fundus] = (150, 60, 30)
        rgb[disc] = (220, 160, 90)
        rgb[cup] = (250, 220, 170)
        rgb += 12 * tex[..., None] + 6 * rng.standard_normal((size, size, 3))
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(d / f"{name}_cropped.jpg", quality=95)
        for r in range(1, n_raters + 1):
            for part, m in (("cup", cup), ("disc", disc)):
                op = (binary_dilation, binary_erosion, lambda x: x)[int(rng.integers(3))]
                _save_jpeg_mask(op(m), d / f"{name}_seg_{part}_{r}_cropped.jpg")
    return root


def _polyp_image(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    mask = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(1, 3))):
        cy, cx = rng.uniform(0.25, 0.75) * h, rng.uniform(0.25, 0.75) * w
        mask |= _ellipse(
            h, w, cy, cx, rng.uniform(0.1, 0.2) * h, rng.uniform(0.1, 0.2) * w, rng.uniform(0, 3)
        )
    tex = _texture(rng, (h, w), 2.0)
    rgb = np.empty((h, w, 3), np.float32)
    rgb[:] = (200, 120, 110)
    rgb[mask] = (150, 60, 60)
    rgb += 15 * tex[..., None] + 8 * rng.standard_normal((h, w, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8), mask


def write_kvasir(root: str | Path, n: int = 6, size: int = 64, *, seed: int = 0) -> Path:
    """Kvasir-SEG layout: images/*.jpg, masks/*.jpg (JPEG noise), train.txt/val.txt, kavsir_bboxes.json."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    bboxes, stems = {}, []
    for i in range(n):
        stem = f"cju{i:04d}synth"
        h, w = size, size + 8 * (i % 3)  # varying sizes, like the real set
        rgb, mask = _polyp_image(rng, h, w)
        Image.fromarray(rgb).save(root / "images" / f"{stem}.jpg", quality=95)
        _save_jpeg_mask(mask, root / "masks" / f"{stem}.jpg")
        ys, xs = np.nonzero(mask)
        bboxes[stem] = {
            "height": h,
            "width": w,
            "bbox": [
                {
                    "label": "polyp",
                    "xmin": int(xs.min()),
                    "ymin": int(ys.min()),
                    "xmax": int(xs.max()),
                    "ymax": int(ys.max()),
                }
            ],
        }
        stems.append(stem)
    n_train = max(1, int(round(0.8 * n)))
    (root / "train.txt").write_text("\n".join(stems[:n_train]) + "\n", encoding="utf-8")
    (root / "val.txt").write_text("\n".join(stems[n_train:]) + "\n", encoding="utf-8")
    (root / "kavsir_bboxes.json").write_text(json.dumps(bboxes), encoding="utf-8")
    return root


def _u8(a: np.ndarray) -> np.ndarray:
    return np.asarray(a).astype(np.uint8)


# binary (H, W) bool mask -> file, in the styles found in real folders (mask_style of write_folder2d)
MASK_STYLES = {
    "L255": lambda m, p: Image.fromarray(_u8(m) * 255).save(p.with_suffix(".png")),
    "L01": lambda m, p: Image.fromarray(_u8(m)).save(p.with_suffix(".png")),
    "RGB": lambda m, p: Image.fromarray(np.repeat(_u8(m)[..., None] * 255, 3, -1)).save(
        p.with_suffix(".png")
    ),
    # red object, transparent black background (annotation-tool export)
    "RGBA": lambda m, p: Image.fromarray(
        np.stack([m, 0 * m, 0 * m, m], -1).astype(np.uint8) * 255, "RGBA"
    ).save(p.with_suffix(".png")),
    "I16": lambda m, p: Image.fromarray(np.asarray(m).astype(np.uint16) * 65535).save(p.with_suffix(".png")),
    "jpeg": lambda m, p: _save_jpeg_mask(m, p.with_suffix(".jpg")),  # Kvasir-style JPEG noise
    "soft": lambda m, p: Image.fromarray(_u8(np.round(gaussian_filter(m * 255.0, 1.5)))).save(
        p.with_suffix(".png")
    ),
}


def write_folder2d(
    root: str | Path,
    n: int = 4,
    size: int = 64,
    *,
    seed: int = 0,
    ext: str = ".png",
    multi: bool = False,
    rgb: bool = False,
    mask_style: str = "L255",
) -> Path:
    """``images/`` + ``masks/``: grey (or ``rgb``) images; masks in ``mask_style`` (a key of
    ``MASK_STYLES``: L 0/255, L 0/1, RGB, RGBA, 16-bit, JPEG, soft edges) or ids 0..2 in L (``multi``).
    The shapes depend on ``seed`` only, so every style of one seed holds the same objects."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        hu, lab = ct_volume(rng, 1, size, 2 if multi else 1)
        grey = _window_u8(hu)[0]
        img = np.stack([grey, _u8(grey * 0.8), _u8(grey * 0.6)], -1) if rgb else grey
        Image.fromarray(img).save(root / "images" / f"sample_{i:03d}{ext}")
        if multi:
            Image.fromarray(_u8(lab[0])).save(root / "masks" / f"sample_{i:03d}.png")
        else:
            MASK_STYLES[mask_style](lab[0] > 0, root / "masks" / f"sample_{i:03d}")
    return root


__all__ = [
    "ct_volume",
    "demo_affine",
    "write_btcv",
    "write_folder2d",
    "write_kvasir",
    "write_npz",
    "write_nnunet",
    "write_refuge",
]
