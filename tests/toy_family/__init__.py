"""A toy model family, added only in the tests (issue 22): one package plus one yaml (``TOY_YAML``) is all a
family needs to train, evaluate and predict through the public contract (:class:`medseg.family.ModelFamily`,
the task contract of docs/DESIGN.md). The worked example of docs/DESIGN.md, "Add a model family"."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medseg.data.batch import ImageBatch
from medseg.eval.evaluation import evaluate_2d
from medseg.family import FamilyBase

# what would be conf/model/toy.yaml
TOY_YAML = """
family: toy
plugin:
  _target_: tests.toy_family.ToyFamily
name: toy
image_size: 64
checkpoint: null
trainable: full
net:
  _target_: tests.toy_family.ToyNet
  width: 4
task_2d:
  _target_: tests.toy_family.ToyTask
  _partial_: true
"""


class ToyNet(nn.Module):
    """Two 3x3 convolutions: one logit map per image, the same for every object of the image."""

    def __init__(self, width: int = 4) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 1, 3, padding=1)
        )

    def forward_objects(self, images: torch.Tensor, obj_img: torch.Tensor) -> torch.Tensor:
        """images [B,3,S,S], obj_img [N] -> per-object logits [N,S,S]."""
        return self.body(images)[obj_img, 0]


class ToyTask:
    """The task contract: train_dataset, collate, training_step, predict, validate."""

    def __init__(self, ctx, settings) -> None:
        self.ctx, self.settings = ctx, settings
        self.train_dataset, self.collate = ctx.train_samples, ctx.collate

    def predict(self, model, batch: ImageBatch) -> torch.Tensor:
        return model.forward_objects(batch.images, batch.obj_img)

    def training_step(self, model, batch: ImageBatch) -> dict:
        return self.settings.loss_fn(self.predict(model, batch), batch.masks)

    def validate(self, model, *, epoch: int, vis_dir: Path | None):
        return evaluate_2d(self, model, self.ctx, self.settings, vis_dir=vis_dir)


class ToyFamily(FamilyBase):
    """The family: defaults of FamilyBase (build = instantiate(model.net), strict weight loading, volumes
    slice by slice) plus its image predictor."""

    name = "toy"

    @torch.no_grad()
    def predict_image(self, model, batch: ImageBatch, kind) -> torch.Tensor:
        return model.forward_objects(batch.images, batch.obj_img)
