"""Build a SAM2 model from the yaml shipped inside the installed ``sam2`` package.

No ``hydra.compose`` (it needs Hydra's global state, which clashes with ``@hydra.main``): the packaged
yaml is read with OmegaConf, patched (image size, RoPE feature sizes, target class) and instantiated.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

# variant name -> yaml inside the sam2 package
VARIANTS: dict[str, str] = {
    "sam2_hiera_t": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_s": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_b+": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_l": "configs/sam2/sam2_hiera_l.yaml",
    "sam2.1_hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
}

TARGETS = {
    "base": "sam2.modeling.sam2_base.SAM2Base",
    "video_predictor": "sam2.sam2_video_predictor.SAM2VideoPredictor",
    "image": "sam2.modeling.sam2_base.SAM2Base",
}


def sam2_yaml_path(variant: str) -> Path:
    """Path of the packaged model yaml for ``variant`` (e.g. ``sam2.1_hiera_t``)."""
    if variant not in VARIANTS:
        raise ValueError(f"model.variant={variant!r} is not a SAM2 variant; choose one of {sorted(VARIANTS)}")
    return Path(str(resources.files("sam2").joinpath(VARIANTS[variant])))


def check_image_size(image_size: int) -> int:
    image_size = int(image_size)
    if image_size % 32 or not 64 <= image_size <= 1024:
        raise ValueError(f"model.image_size={image_size} must be a multiple of 32 between 64 and 1024")
    return image_size


def model_config(
    variant: str, image_size: int = 1024, target: str = "base", extra: dict | None = None
) -> DictConfig:
    """The packaged ``model:`` node of ``variant`` patched for ``image_size``.

    The memory attention's RoPE tables follow the image size: ``feat_sizes = [S/16, S/16]``.
    """
    image_size = check_image_size(image_size)
    cfg = OmegaConf.load(sam2_yaml_path(variant)).model
    cfg._target_ = TARGETS[target]
    cfg.image_size = image_size
    feat = [image_size // 16, image_size // 16]
    layer = cfg.memory_attention.layer
    layer.self_attention.feat_sizes = feat
    layer.cross_attention.feat_sizes = feat
    if target == "video_predictor":
        # same switches as Meta's builder with apply_postprocessing=False (no _C extension here)
        pass
    from omegaconf import OmegaConf as _OC

    extra = _OC.to_container(extra) if _OC.is_config(extra) else extra
    for key, value in (extra or {}).items():
        OmegaConf.update(cfg, key, value, force_add=True)
    return cfg


def build_sam2_model(
    variant: str,
    *,
    image_size: int = 1024,
    checkpoint: str | None = None,
    default_checkpoint: str | None = None,
    download_hint: str | None = None,
    target: str = "base",
    extra: dict | None = None,
    trainable: str | list[str] | None = None,
    device: str | torch.device = "cpu",
) -> torch.nn.Module:
    """Build ``variant`` at ``image_size`` and load ``checkpoint`` strictly (None = random init).

    Args:
        variant: one of :data:`VARIANTS`.
        image_size: input side in pixels, a multiple of 32 in [64, 1024].
        checkpoint: Meta ``.pt`` (``{"model": state_dict}``) or one of our training checkpoints; ``"auto"``
            = ``default_checkpoint`` (error naming it and ``download_hint`` when missing); None = random
            init (logged as a WARNING). The result is recorded as ``model.weights_info``
            (:func:`medseg.train.weights.weights_record`).
        default_checkpoint: the published file of this variant (``model.default_checkpoint``).
        download_hint: the command that fetches ``default_checkpoint``.
        target: ``base`` (``SAM2Base``, for training) or ``video_predictor`` (Meta's predictor class).
        extra: dotted-key overrides of the model node (e.g. ``{"num_maskmem": 5}``).
        trainable: preset or name patterns of the parts that train (see :mod:`sam2_train.trainable`).
    """
    from medseg.train.weights import resolve_checkpoint, weights_record

    path = resolve_checkpoint(
        checkpoint, default=default_checkpoint, hint=download_hint, what=f"SAM2 {variant}"
    )
    cfg = model_config(variant, image_size, target, extra)
    model = instantiate(cfg, _recursive_=True)
    if path is not None:
        from sam2_train.checkpoint import load_sam2_weights

        load_sam2_weights(model, path, variant=variant)
    model.weights_info = weights_record(path)
    if trainable is not None:
        from sam2_train.trainable import apply_trainable

        apply_trainable(model, trainable)
    return model.to(device)
