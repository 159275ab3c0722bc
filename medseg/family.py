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
from omegaconf import DictConfig, OmegaConf

from medseg.data.batch import ImageBatch
from medseg.data.prompts import PromptKind


@runtime_checkable
class ModelFamily(Protocol):
    """What every model family provides (see docs/DESIGN.md, "Add a model family").

    Attributes:
        name: the family's name (``sam2``, ``sam``, ``cnn``, ``yolo``, ...).
        propagates: True when :meth:`predict_volume` tracks objects from prompted slices through the
            volume (SAM2: it needs a prompt on a key slice); False for families that segment slice by slice.
        presets: ``{preset: [fnmatch patterns of parameters that stay trainable]}`` (``model.trainable``).
    """

    name: str
    presets: Mapping[str, Sequence[str]]
    propagates: bool

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
    propagates = False

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
        """Slice by slice: each object's prompt carried to every slice of its extent (``options["extent"]``
        ``{object index: (first, last)}``, default its prompted slices' range); automatic mode: every
        object on every slice."""
        from medseg.data.volume_prompts import VolumePrompts, carry_prompts, segment_slices

        if kind.automatic:
            blank = {"box": [0.0] * 4, "points": [], "point_labels": [], "mask_prompt": None, "empty": False}
            D = images.shape[0]
            prompts = VolumePrompts({o: dict.fromkeys(range(D), blank) for o in range(len(prompts.obj_ids))},
                                    list(prompts.obj_ids))  # fmt: skip
        else:
            prompts = carry_prompts(prompts, (options or {}).get("extent"))
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


def build_configured(model_cfg: DictConfig) -> Any:
    """The model of the composed ``model`` node, as every entry point builds it: the family's ``build``
    (a builder may load ``model.checkpoint`` itself and set ``weights_info``), else ``model.checkpoint``
    loaded strictly by the family (``auto`` = ``default_checkpoint``; ``null`` = random init, WARNING).
    ``model.weights_info`` records the weights (path, sha256; the encoder's own under ``encoder``)."""
    from hydra.errors import InstantiationException

    from medseg.train.weights import resolve_checkpoint, weights_record

    family = build_family(model_cfg)
    try:
        model = family.build(model_cfg)
    except InstantiationException as e:  # the user's error (bad checkpoint, missing weights), not Hydra's
        if isinstance(e.__cause__, (ValueError, FileNotFoundError, RuntimeError)):
            raise e.__cause__ from None
        raise
    if getattr(model, "weights_info", None) is not None:  # the builder loaded model.checkpoint itself
        return model
    name = str(model_cfg.get("name", "model"))
    path = resolve_checkpoint(
        model_cfg.get("checkpoint"),
        default=model_cfg.get("default_checkpoint"),
        hint=OmegaConf.select(model_cfg, "net.download_hint"),
        what=name,
    )
    if path is not None:
        family.load_weights(model, path, f"model={name}")
    if path is None and getattr(model, "weights_file", None):  # YOLO given model.net.weights
        path = Path(model.weights_file)
    enc = getattr(model, "encoder_weights_info", None)
    model.weights_info = weights_record(path, **({"encoder": enc} if enc is not None else {}))
    return model
