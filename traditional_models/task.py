"""Baselines on the shared engine: the same samples, prompts (boxes), losses, metrics and outputs as SAM2.

``CNNTask`` trains the torch baselines (resnet_box_prompt, resnet50_frozen_decoder, unet) with the
shared engine loop. ``YoloTask`` hands training to ultralytics (``fit_external``) on a YOLO dataset
exported from *our* split, then scores its masks with *our* metrics on *our* validation split.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from medseg.eval.evaluation import evaluate_2d
from medseg.eval.viz import to_uint8_image
from medseg.train.task_settings import TaskSettings


class CNNTask:
    """Per-object logits from ``model.forward_objects`` trained with the configured loss."""

    def __init__(self, ctx, settings: TaskSettings):
        self.ctx, self.settings = ctx, settings
        self.loss_fn = settings.loss_fn
        self.train_dataset = ctx.train_samples
        self.collate = ctx.collate

    def _logits(self, model, batch) -> torch.Tensor:
        return model.forward_objects(batch.images, batch.boxes, batch.obj_img, batch.obj_class)

    def training_step(self, model, batch) -> dict:
        valid = getattr(batch, "valid", None)  # unannotated pixels (nnU-Net ignore) are left out
        extra = {} if valid is None else {"valid": valid}
        return self.loss_fn(self._logits(model, batch), batch.masks, **extra)

    def predict(self, model, batch) -> torch.Tensor:
        return self._logits(model, batch)

    def validate(self, model, *, epoch: int, vis_dir: Path | None):
        return evaluate_2d(self, model, self.ctx, self.settings, vis_dir=vis_dir)


class YoloTask:
    """Ultralytics YOLO segmentation trained by ultralytics, evaluated by the suite."""

    def __init__(self, ctx, settings: TaskSettings):
        self.ctx, self.settings = ctx, settings
        self.yolo = None
        self.train_dataset = ctx.train_samples
        self.collate = ctx.collate

    @staticmethod
    def _export_items(samples):
        for i in range(len(samples)):
            s = samples.get(i, np.random.default_rng([0, i]))
            if s.get("ignore_label") is not None:
                raise ValueError(
                    f"model=yolo_seg: case {s['case_id']} has unannotated pixels (the nnU-Net 'ignore' label "
                    f"{s['ignore_label']}), which YOLO polygons cannot leave out of its loss; use a model of "
                    "this suite's loss (e.g. model=unet) for this dataset"
                )
            lab = torch.as_tensor(s["label"]).reshape(s["image"].shape[-2:]).numpy()
            yield str(s["case_id"]), to_uint8_image(s["image"].reshape(3, *lab.shape)), lab

    def fit_external(self, yolo, out_dir: Path, device: torch.device) -> tuple[torch.nn.Module, list[dict]]:
        """Export our split as a YOLO dataset and train with ultralytics (the engine's external-trainer
        strategy, :class:`medseg.train.contract.ExternalTrainer`). Returns the trained network and one row
        per epoch of ultralytics' log (``train/*`` losses, ``lr``); the engine validates, logs and writes the
        checkpoints in the suite's format. ultralytics' weights are kept as ``yolo_best.pt`` beside them."""
        from traditional_models.yolo_export import export_yolo_dataset

        self.yolo = yolo
        out_dir = Path(out_dir)
        names = {int(k): v for k, v in self.ctx.label_names.items() if int(k) > 0}
        splits = {"train": list(self._export_items(self.ctx.train_samples))}
        if self.ctx.val_samples is not None:
            splits["val"] = list(self._export_items(self.ctx.val_samples))
        data_yaml = export_yolo_dataset(splits, out_dir / "yolo_dataset", names)
        # the suite's trainer settings govern, as for every other model
        yolo.epochs, yolo.batch = self.settings.max_epochs, self.settings.batch_size
        weights = yolo.train(
            data_yaml, out_dir / "yolo_train", device="cpu" if device.type == "cpu" else device.index or 0
        )
        kept = out_dir / self.WEIGHTS
        shutil.copyfile(weights, kept)
        yolo.model = str(kept)
        from ultralytics import YOLO

        net = YOLO(str(kept)).model  # written by ultralytics in this run, not a file the user passed
        per_epoch = -(-len(splits["train"]) // max(1, int(yolo.batch)))
        return net, epoch_rows(Path(weights).parents[1] / "results.csv", per_epoch)

    WEIGHTS = "yolo_best.pt"

    def state_dict(self) -> dict:
        """Saved in the checkpoints: the ultralytics weights file kept beside them (``model.checkpoint`` of a
        YOLO run finds it there)."""
        return {"yolo_weights": self.WEIGHTS}

    def load_state_dict(self, state: dict) -> None:
        pass  # nothing to restore: a YOLO run is not resumed (its loop is ultralytics')

    def load_external(self, yolo) -> torch.nn.Module:
        """``train=false``: evaluate the weights given as ``model.net.weights``."""
        if not str(yolo.model).endswith(".pt"):
            raise ValueError("model.net.weights: give the YOLO weights (.pt) to evaluate with train=false")
        from ultralytics import YOLO

        from traditional_models.yolo import check_yolo_weights

        self.yolo = yolo
        return YOLO(str(check_yolo_weights(yolo.model))).model

    def predict(self, model, batch) -> torch.Tensor:
        """Per-object logits [N,S,S] of the instances ultralytics predicts (the family's image predictor)."""
        from traditional_models.family import YoloFamily

        self.yolo.label_ids = sorted(int(k) for k in self.ctx.label_names if int(k) > 0)
        return YoloFamily().predict_image(self.yolo, batch, self.settings.prompt.kind)

    def validate(self, model, *, epoch: int, vis_dir: Path | None):
        return evaluate_2d(self, model, self.ctx, self.settings, vis_dir=vis_dir)


def epoch_rows(results_csv: Path, steps_per_epoch: int) -> list[dict]:
    """ultralytics' ``results.csv`` as the engine's ``metrics.csv`` rows: ``epoch``, ``step`` (optimizer
    steps so far), its ``train/*`` losses and ``lr`` (first parameter group). Its own validation columns are
    left out: the suite scores the run with its protocol. No file (an older ultralytics): no rows."""
    import csv

    if not Path(results_csv).is_file():
        return []
    rows = []
    with open(results_csv, newline="", encoding="utf-8") as f:
        for raw in csv.DictReader(f):
            r = {str(k).strip(): str(v).strip() for k, v in raw.items() if k is not None}
            epoch = int(float(r["epoch"]))
            row = {"epoch": epoch, "step": epoch * steps_per_epoch}
            row.update({k: float(v) for k, v in r.items() if k.startswith("train/") and v})
            if r.get("lr/pg0"):
                row["lr"] = float(r["lr/pg0"])
            rows.append(row)
    return rows
