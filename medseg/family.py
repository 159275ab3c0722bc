"""The model-family contract: what the run layer (``medseg/run``) asks of every family.

A family (SAM2: ``sam2_train`` + ``func_2d`` + ``func_3d``; SAM/MedSAM: ``sam_family``; CNN and YOLO:
``traditional_models``) implements :class:`ModelFamily` and is named in each ``conf/model/<name>.yaml``
under ``plugin:`` by ``_target_``; :func:`build_family` instantiates it, so ``medseg`` never imports a
family. :class:`FamilyBase` gives the defaults a family overrides only where it differs (no variants, no
state-dict adaptation, nothing to checkpoint, ``build`` = ``instantiate(model.net)``).

Example (``conf/model/unet.yaml``)::

    plugin:
      _target_: traditional_models.family.CNNFamily
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from medseg.data.batch import ImageBatch
from medseg.data.prompts import PromptKind


@runtime_checkable
class ModelFamily(Protocol):
    """What every model family provides (see docs/DESIGN.md, "Add a model family").

    Attributes:
        name: the family's name (``sam2``, ``sam``, ``cnn``, ``yolo``, ...).
        presets: ``{preset: [fnmatch patterns of parameters that stay trainable]}`` (``model.trainable``).
    """

    name: str
    presets: Mapping[str, Sequence[str]]

    def build(self, model_cfg: DictConfig) -> Any:
        """The model of ``model_cfg`` (the composed ``model`` node); loads ``model.checkpoint`` when the
        builder does it itself (it then sets ``model.weights_info``)."""
        ...

    def guess_variant(self, state_dict: Mapping[str, Any]) -> str | None:
        """The variant a weights file's state dict belongs to (e.g. ``vit_b``), None if not this family's."""
        ...

    def adapt_state_dict(self, state_dict: dict, model: torch.nn.Module) -> dict:
        """A state dict made for another input size etc. mapped onto ``model``'s shapes (no key renamed)."""
        ...

    def load_weights(self, model: Any, path: str | Path, what: str) -> None:
        """Load ``model.checkpoint`` (``path``) into a model whose builder did not (strictly; one
        :class:`~medseg.train.checkpoint.CheckpointError` line naming the file otherwise)."""
        ...

    def enable_activation_checkpointing(self, model: torch.nn.Module) -> int:
        """Recompute the image encoder's blocks in the backward pass; returns how many blocks (0: none).
        Parameters and state-dict keys do not change."""
        ...

    def predict_image(self, model: Any, batch: ImageBatch, kind: PromptKind) -> torch.Tensor:
        """Per-object logits ``[N,S,S]`` of the N objects of ``batch`` (prompted as ``kind`` says)."""
        ...

    def predict_volume(
        self, model: Any, images: torch.Tensor, prompts: Any, kind: PromptKind, out_hw: tuple[int, int],
        *, threshold: float = 0.0, options: Mapping[str, Any] | None = None,
    ):  # fmt: skip
        """Labels ``(D,H,W)`` int64 of a volume ``images [D,3,S,S]`` prompted by ``prompts``
        (:class:`~medseg.data.volume_prompts.VolumePrompts`, in S x S pixels), resized to ``out_hw``."""
        ...


class FamilyBase:
    """Defaults of :class:`ModelFamily`: a family overrides what differs. ``predict_volume`` segments slice
    by slice with :meth:`predict_image` (:func:`medseg.data.volume_prompts.segment_slices`)."""

    name = "base"
    presets: Mapping[str, Sequence[str]] = {"full": ["*"]}

    def build(self, model_cfg: DictConfig) -> Any:
        return instantiate(model_cfg.net)

    def guess_variant(self, state_dict: Mapping[str, Any]) -> str | None:
        return None

    def adapt_state_dict(self, state_dict: dict, model: torch.nn.Module) -> dict:
        return state_dict

    def load_weights(self, model: Any, path: str | Path, what: str) -> None:
        from medseg.train.checkpoint import load_weights_file

        load_weights_file(model, path, what)

    def enable_activation_checkpointing(self, model: torch.nn.Module) -> int:
        return 0

    def predict_image(self, model: Any, batch: ImageBatch, kind: PromptKind) -> torch.Tensor:
        raise ValueError(f"model family {self.name!r} has no image predictor")

    def predict_volume(self, model, images, prompts, kind, out_hw, *, threshold=0.0, options=None):
        from medseg.data.volume_prompts import segment_slices

        return segment_slices(
            lambda batch: self.predict_image(model, batch, kind), images, prompts, out_hw, threshold=threshold
        )


def build_family(model_cfg: DictConfig) -> ModelFamily:
    """The family named by ``model.plugin._target_`` (checked against :class:`ModelFamily`)."""
    node = model_cfg.get("plugin") if model_cfg is not None else None
    if node is None or "_target_" not in node:
        name = model_cfg.get("name", "?") if model_cfg is not None else "?"
        raise ValueError(
            f"model={name}: its yaml names no family (add plugin: {{_target_: <package>.family.<Class>}})"
        )
    family = instantiate(node)
    if not isinstance(family, ModelFamily):
        raise ValueError(
            f"model.plugin._target_={node._target_}: not a model family (see medseg.family.ModelFamily)"
        )
    return family
