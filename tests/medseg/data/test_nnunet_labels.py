"""nnU-Net v2 label semantics (issue 20, 6): the ``ignore`` label and region-based labels.

nnU-Net: ``"ignore"`` (the highest id) marks unannotated voxels; they count neither as foreground nor as
background of any class, in the loss and in the metrics, and ``ignore`` is no class. Region-based
``labels`` (lists of ids, overlapping regions) are refused in one line saying so.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.data import synthetic as S
from medseg.data.datasets import NnUNetDataset
from medseg.eval.metrics import score_case
from medseg.train.losses import DiceBCELoss, DiceCELoss, SAM2Loss
from tests.fault_helpers import one_line_exit

IGNORE = 3


def with_ignore(root, *, slab=slice(0, 2)):
    """Declare ``"ignore": 3`` in dataset.json and mark the left half of slices ``slab`` of every
    training label as unannotated (covering organ and background voxels)."""
    js = root / "dataset.json"
    meta = json.loads(js.read_text(encoding="utf-8"))
    meta["labels"]["ignore"] = IGNORE
    js.write_text(json.dumps(meta), encoding="utf-8")
    for f in sorted((root / "labelsTr").glob("*.nii.gz")):
        img = nib.load(str(f))
        lab = np.asarray(img.dataobj).copy()  # (x, y, z)
        lab[: lab.shape[0] // 2, :, slab] = IGNORE
        nib.save(nib.Nifti1Image(lab.astype(np.uint8), img.affine, img.header), str(f))
    return root


@pytest.fixture
def nnunet_ignore(tmp_path):
    return with_ignore(S.write_nnunet(tmp_path / "nn", n_cases=3, depth=6, size=32, n_organs=2))


def test_ignore_label_is_no_class_and_passes_verification(nnunet_ignore):
    from medseg.data.verify import verify_dataset

    ds = NnUNetDataset(nnunet_ignore)
    assert ds.label_names == {1: "organ1", 2: "organ2"} and ds.ignore_label == IGNORE
    case = ds.load_case("case_000")
    assert case["ignore_label"] == IGNORE and (np.asarray(case["label"]) == IGNORE).any()
    assert case["label_names"] == {1: "organ1", 2: "organ2"}
    assert verify_dataset(ds) == []


def test_ignore_label_survives_a_label_remap(nnunet_ignore):
    ds = NnUNetDataset(nnunet_ignore, labels={1: [1, 2]})  # both organs as one class
    lab = np.asarray(ds.load_case("case_000")["label"])
    assert set(np.unique(lab).tolist()) <= {0, 1, IGNORE} and (lab == IGNORE).any()
    assert ds.label_names == {1: "organ1+organ2"}


def test_ignore_label_not_the_highest_id_is_refused(tmp_path, capsys):
    root = S.write_nnunet(tmp_path / "nn", n_cases=2, depth=4, size=16, n_organs=2)
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    meta["labels"] = {"background": 0, "ignore": 1, "organ1": 2}
    (root / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    line = one_line_exit(lambda: NnUNetDataset(root), capsys)
    assert str(root / "dataset.json") in line and "ignore" in line and "highest" in line, line


def test_region_based_labels_are_refused_saying_so(tmp_path, capsys):
    root = S.write_nnunet(tmp_path / "nn", n_cases=2, depth=4, size=16, n_organs=3)
    meta = json.loads((root / "dataset.json").read_text(encoding="utf-8"))
    meta["labels"] = {"background": 0, "whole": [1, 2, 3], "core": [2, 3], "enhancing": 3}
    meta["regions_class_order"] = [1, 2, 3]
    (root / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    line = one_line_exit(lambda: NnUNetDataset(root), capsys)
    assert str(root / "dataset.json") in line and "region-based labels" in line, line
    assert "not supported" in line and "undeclared" not in line, line


# ---------------------------------------------------------------- metrics
def test_metrics_leave_ignore_voxels_out():
    target = np.zeros((4, 8), np.int64)
    target[:, :4] = 1
    target[:, 6:] = IGNORE  # unannotated: the prediction there is neither right nor wrong
    pred = np.zeros_like(target)
    pred[:, :4] = 1
    pred[:, 6:] = 1
    (row,) = score_case(pred, target, (1.0, 1.0), {1: "organ1"}, ignore_label=IGNORE)
    assert row["dice"] == 1.0 and row["fp"] == 0 and row["hd95"] == 0.0
    (plain,) = score_case(pred, target, (1.0, 1.0), {1: "organ1"})
    assert plain["dice"] < 1.0  # without the rule, the unannotated voxels count as background


def test_evaluation_loop_takes_the_ignore_label_of_the_case():
    from medseg.data.prompts import PromptConfig
    from medseg.eval.evaluation import CaseResult, EvalProtocol, run_evaluation

    target = np.zeros((2, 4, 8), np.int64)
    target[:, :, :4] = 1
    target[:, :, 6:] = IGNORE
    pred = np.where(target == IGNORE, 2, target)
    classes = {1: "organ1", 2: "organ2"}
    raw = {"case_id": "c", "ignore_label": IGNORE}
    results = [
        CaseResult("c", pred, target, (1.0, 1.0, 1.0), classes, ignore_label=IGNORE),
        CaseResult("c", pred, target, (1.0, 1.0, 1.0), classes, extras={"raw": raw}),  # as inference
    ]
    protocol = EvalProtocol(prompt=PromptConfig(type="box"))
    for res in results:
        summary, rows, _ = run_evaluation(1, lambda i, res=res: res, protocol, progress=False)
        assert [r["class_name"] for r in rows] == ["organ1", "organ2"]
        assert rows[1]["status"] == "empty_both" and rows[0]["dice"] == 1.0
        assert summary["val/dice"] == 1.0 and not any("ignore" in k for k in summary)


# ---------------------------------------------------------------- loss
@pytest.mark.parametrize("loss_cls", [DiceBCELoss, DiceCELoss, SAM2Loss])
def test_loss_gets_nothing_from_ignore_pixels(loss_cls):
    torch.manual_seed(0)
    loss_fn = loss_cls()
    target = torch.zeros(2, 8, 8, dtype=torch.bool)
    target[:, 2:5, 2:5] = True
    valid = torch.ones(2, 8, 8, dtype=torch.bool)
    valid[:, :, 6:] = False
    logits = torch.randn(2, 8, 8, requires_grad=True)
    out = loss_fn(logits, target, valid=valid)
    out["loss"].backward()
    assert logits.grad[~valid].abs().max() == 0  # no gradient reaches an unannotated pixel
    assert logits.grad[valid].abs().max() > 0
    changed = logits.detach().clone()
    changed[~valid] = 50.0  # whatever is predicted there does not change the loss
    again = loss_fn(changed, target, valid=valid)
    assert again["loss"].item() == pytest.approx(out["loss"].item(), rel=1e-6)
    assert loss_fn(changed, target)["loss"].item() != pytest.approx(out["loss"].item(), rel=1e-3)


# ---------------------------------------------------------------- training batches
def test_2d_batch_has_no_ignore_object_and_marks_its_pixels(nnunet_ignore):
    from medseg.data.batch import collate_sam2_2d

    lab = np.zeros((16, 16), np.int64)
    lab[2:6, 2:6] = 1
    lab[10:, :] = IGNORE
    sample = {
        "image": torch.zeros(3, 16, 16),
        "label": torch.from_numpy(lab),
        "case_id": "c",
        "label_names": {1: "organ1", 2: "organ2"},
        "ignore_label": IGNORE,
    }
    batch = collate_sam2_2d([sample], {"type": "box", "empty": "negative"}, np.random.default_rng(0))
    assert batch.obj_class.tolist() == [1, 2]
    assert batch.valid.shape == batch.masks.shape
    assert not batch.valid[:, 10:].any() and batch.valid[:, :10].all()
    assert not batch.masks[:, 10:].any()


def test_3d_clips_have_no_ignore_object_and_mark_its_voxels(nnunet_ignore):
    from omegaconf import OmegaConf

    from func_3d.task import ClipSamples, collate_clips
    from medseg.data.prompts import PromptConfig
    from medseg.data.transforms import build_transform

    ds = NnUNetDataset(nnunet_ignore)
    cases = [ds.load_case(c) for c in ds.case_ids if ds.native_split(c) == "train"]
    options = OmegaConf.create({"video_length": 6, "max_objects": 4, "reverse_prob": 0.0})
    clips = ClipSamples(
        cases, build_transform({"modality": "ct", "window": "abdomen"}, 32), options, PromptConfig(type="box")
    )
    batch = collate_clips([clips.get(0, np.random.default_rng(0))])
    assert IGNORE not in batch.obj_ids[0] and batch.obj_ids[0]
    valid = batch.valid[0]  # [T, S, S]
    assert valid.shape == (batch.masks[0].shape[0], *batch.masks[0].shape[2:])
    assert not valid.all() and not (batch.masks[0] & ~valid[:, None]).any()


# ---------------------------------------------------------------- a whole run
def test_train_3d_on_a_dataset_with_ignore_scores_only_its_classes(nnunet_ignore, tmp_path):
    import csv

    from tests.conftest import run_entry

    out = tmp_path / "run"
    run_entry(
        "train_3d",
        ["dataset=nnunet", f"dataset.root={nnunet_ignore}", "func_3d.video_length=2", "trainer.batch_size=1"],
        out,
    )
    rows = list(csv.DictReader((out / "metrics.csv").open(encoding="utf-8")))
    assert rows and not any("ignore" in k for k in rows[0]), list(rows[0])
    assert any(k.startswith("val/dice/organ") for k in rows[0]), list(rows[0])


def test_yolo_refuses_a_dataset_with_unannotated_pixels():
    """YOLO trains on exported polygons, which cannot leave pixels out: one line, not 'ignore' as background."""
    from traditional_models.task import YoloTask

    class Samples:
        def __len__(self):
            return 1

        def get(self, i, rng):
            lab = torch.zeros(8, 8, dtype=torch.long)
            lab[4:] = IGNORE
            return {"case_id": "c", "image": torch.zeros(3, 8, 8), "label": lab, "ignore_label": IGNORE}

    with pytest.raises(ValueError, match=r"model=yolo_seg: case c .*'ignore' label 3"):
        list(YoloTask._export_items(Samples()))
