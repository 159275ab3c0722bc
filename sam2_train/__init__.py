"""SAM2 for training: build any variant from the installed ``sam2`` package, load checkpoints
strictly, choose trainable parts.

Importing ``sam2`` initialises Hydra's global state (``initialize_config_module("sam2")``), which
makes a later ``@hydra.main`` fail with "GlobalHydra is already initialized". We import it here once
and clear that state, so entry points may import this package before ``@hydra.main`` runs. Model
yamls are then read with OmegaConf directly (see :mod:`sam2_train.build`), never with ``compose``.
"""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # sam2 warns about its missing CUDA extension at import
    import sam2  # noqa: F401

from hydra.core.global_hydra import GlobalHydra

GlobalHydra.instance().clear()

from sam2_train.activation import set_activation_checkpointing  # noqa: E402
from sam2_train.build import VARIANTS, build_sam2_model, sam2_yaml_path  # noqa: E402
from sam2_train.checkpoint import load_sam2_weights  # noqa: E402

__all__ = [
    "VARIANTS",
    "build_sam2_model",
    "load_sam2_weights",
    "sam2_yaml_path",
    "set_activation_checkpointing",
]
