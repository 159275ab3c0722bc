"""What the benchmarks feed the models: the composed Hydra configs, synthetic frames, 2D batches, 3D clips
and the synthetic CT case with its key-slice box prompts. Deterministic (seeded), no files needed.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

import medseg.run  # noqa: F401  (stores the option schemas the conf/ yaml files build on)
import sam2_train  # noqa: F401  (imports sam2 once and clears its Hydra state, before any compose)

ROOT = Path(__file__).resolve().parents[1]
VARIANT = "sam2.1_hiera_t"
VARIANTS = ["sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l"]
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


# ====================================================================== configs
def compose(root: str, overrides: list[str], out_dir: Path):
    """The real Hydra config (conf/<root>.yaml) composed as tests/conftest.py does."""
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hcompose(root, overrides=[*overrides, f"hydra.run.dir={out_dir}"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    return cfg


def base_overrides(size: int, device: str) -> list[str]:
    return [
        f"model.image_size={size}",
        f"trainer.device={device}",
        "trainer.num_workers=0",
        "trainer.amp=false",
        "trainer.progress_bar=false",
        "logger=none",
        "dataset.root=/nonexistent",
    ]


# ====================================================================== frames and batches
def normalise(x: torch.Tensor) -> torch.Tensor:
    """ImageNet normalisation of ``[..., 3, H, W]`` frames in [0, 1]."""
    m = torch.tensor(MEAN)[:, None, None]
    s = torch.tensor(STD)[:, None, None]
    return (x - m) / s


def disc_frames(T: int, S: int, n_obj: int, seed: int = 0):
    """T frames [T,3,S,S] (normalised) of n_obj drifting discs on noise, masks [T,n_obj,S,S], box per frame."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(S).float(), torch.arange(S).float(), indexing="ij")
    centres = [(0.3, 0.4, 0.15), (0.65, 0.6, 0.2), (0.5, 0.2, 0.1), (0.7, 0.25, 0.1)]
    imgs, masks = [], []
    for t in range(T):
        img = 0.1 * torch.rand(S, S, generator=g)
        ms = []
        for cx, cy, r in centres[:n_obj]:
            rr = r * S * (1 + 0.05 * math.sin(t))
            m = ((xx - (cx + 0.01 * t) * S) ** 2 + (yy - cy * S) ** 2) < rr**2
            img = img + m.float() * 0.7
            ms.append(m)
        imgs.append(img.clamp(0, 1))
        masks.append(torch.stack(ms))
    vol = torch.stack(imgs)[:, None].expand(-1, 3, -1, -1)
    return normalise(vol).contiguous(), torch.stack(masks)


def box_of(mask: torch.Tensor) -> list[float]:
    """``[x0, y0, x1, y1]`` of a non-empty ``[H, W]`` mask."""
    ys, xs = torch.nonzero(mask, as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]


def make_2d_batch(S: int, B: int = 2):
    """An ``ImageBatch`` of B disc images at S px, one box per image."""
    from medseg.data.batch import ImageBatch

    imgs, masks = [], []
    for b in range(B):
        x, m = disc_frames(1, S, 1, seed=b)
        imgs.append(x[0])
        masks.append(m[0, 0])
    masks = torch.stack(masks)
    boxes = torch.tensor([box_of(m) for m in masks])
    return ImageBatch(
        images=torch.stack(imgs),
        masks=masks,
        obj_img=torch.arange(B),
        obj_class=torch.ones(B, dtype=torch.long),
        boxes=boxes,
        points=torch.zeros(B, 0, 2),
        point_labels=torch.zeros(B, 0, dtype=torch.long),
        mask_prompts=torch.zeros(B, S, S),
        case_ids=[str(b) for b in range(B)],
        spacing=torch.ones(B, 2),
    )


def make_clip(S: int, T: int = 8, O: int = 2, seed: int = 3):
    """A one-clip ``ClipBatch``: T frames x O drifting discs, a box per object on frame 0."""
    from func_3d.prompts import FramePrompts
    from func_3d.task import ClipBatch

    frames, masks = disc_frames(T, S, O, seed=seed)
    boxes = torch.tensor([box_of(masks[0, o]) for o in range(O)])
    return ClipBatch(
        images=[frames],
        masks=[masks],
        prompts=[{0: FramePrompts(boxes=boxes)}],
        obj_ids=[list(range(1, O + 1))],
        case_ids=["clip"],
    )


def merge_clips(clips):
    """Several one-clip ``ClipBatch`` es as one batch of clips."""
    from func_3d.task import ClipBatch

    return ClipBatch(
        images=[c.images[0] for c in clips],
        masks=[c.masks[0] for c in clips],
        prompts=[c.prompts[0] for c in clips],
        obj_ids=[c.obj_ids[0] for c in clips],
        case_ids=[f"clip{i}" for i in range(len(clips))],
    )


# ====================================================================== synthetic CT
def ct_case(T: int, S: int, n_organs: int, seed: int = 0):
    """Synthetic CT (medseg.data.synthetic.ct_volume) at S px: normalised frames [T,3,S,S] and the label [T,S,S]."""
    from medseg.data.synthetic import ct_volume

    hu, lab = ct_volume(np.random.default_rng(seed), T, S, n_organs)
    u8 = np.clip((hu.astype(np.float32) + 160) / 400, 0, 1)
    x = torch.from_numpy(u8)[:, None].expand(-1, 3, -1, -1)
    return normalise(x).contiguous(), lab


def key_slice_prompts(lab: np.ndarray):
    """(organ ids, volume prompts): one exact box per organ on its key slice (largest area)."""
    from func_3d.volume import prompts_from_label

    ids = [int(i) for i in np.unique(lab) if i > 0]
    vp = prompts_from_label(lab, ids, {"type": "box", "jitter_px": 0, "jitter_frac": 0.0}, mode="key_slice")
    return ids, vp


def sensitive_weights(model) -> None:
    """Same as tests/func_3d/test_parity_3d.py: random weights give near-constant masks otherwise."""
    with torch.no_grad():
        for mlp in model.sam_mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(30.0)
        model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.add_(3.0)
        for name, p in model.named_parameters():
            if name.endswith("gamma"):
                p.fill_(1.0)
