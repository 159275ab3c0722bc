"""The baseline families as :class:`medseg.family.ModelFamily`: the torch CNNs (``resnet_box_prompt``,
``resnet50_frozen_decoder``, ``unet``; per-object logits from ``forward_objects``) and YOLO (trained and
run by ultralytics; its instance masks become per-object logits). Volumes are segmented slice by slice
(the default of :class:`medseg.family.FamilyBase`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medseg.data.batch import ImageBatch
from medseg.family import FamilyBase


class CNNFamily(FamilyBase):
    """A torch baseline with ``forward_objects(images, boxes, obj_img, obj_class) -> [N,S,S]`` logits."""

    name = "cnn"

    @torch.no_grad()
    def predict_image(self, model: Any, batch: ImageBatch, kind) -> torch.Tensor:
        return model.forward_objects(batch.images, batch.boxes, batch.obj_img, batch.obj_class)


class YoloFamily(FamilyBase):
    """Ultralytics YOLO segmentation (``traditional_models.yolo.YoloSeg``, not an ``nn.Module``): automatic."""

    name = "yolo"

    def load_weights(self, model: Any, path: str | Path, what: str) -> None:
        model.use_checkpoint(path)  # a YOLO .pt, or our checkpoint of a YOLO run naming the one beside it

    def predict_image(self, model: Any, batch: ImageBatch, kind) -> torch.Tensor:
        from medseg.eval.viz import to_uint8_image
        from traditional_models.yolo import labels_from_instances

        preds = model.predict([to_uint8_image(im) for im in batch.images])
        S = batch.images.shape[-1]
        ids = getattr(model, "label_ids", None)  # YOLO class i -> label_ids[i] (classes it trained on)
        ids = list(ids) if ids is not None else None  # None: class i -> id i + 1
        out = torch.full((batch.obj_img.shape[0], S, S), -10.0, device=batch.images.device)
        for b, p in enumerate(preds):
            lab = labels_from_instances(p.masks, p.classes, p.scores, label_ids=ids, shape=(S, S))
            lab = torch.as_tensor(lab, device=out.device)
            for n in (batch.obj_img == b).nonzero().flatten().tolist():
                out[n][lab == batch.obj_class[n]] = 10.0
        return out
