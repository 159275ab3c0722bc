"""medseg.train.losses: hand-computed values, multimask selection, configs, bad inputs."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate
from monai.losses import DiceCELoss as MonaiDiceCELoss
from omegaconf import OmegaConf

from medseg.train.losses import DiceBCELoss, DiceCELoss, SAM2Loss
from tests.conftest import ROOT

CONF = ROOT / "conf" / "loss"
BIG = 100.0  # sigmoid(100) == 1 in float32: soft Dice equals hard Dice


def _case() -> tuple[torch.Tensor, torch.Tensor]:
    """4x4: target 3 px, prediction 3 px, overlap 2 px (1 FP, 1 FN)."""
    target = torch.zeros(1, 4, 4, dtype=torch.bool)
    target[0, 0, 0:3] = True
    pred = torch.zeros(1, 4, 4, dtype=torch.bool)
    pred[0, 0, 1:4] = True
    logits = torch.where(pred, BIG, -BIG)
    return logits, target


def test_dice_bce_hand_values():
    logits, target = _case()
    out = DiceBCELoss(dice_weight=2.0, bce_weight=0.5)(logits, target)
    dice = 1 - 2 * 2 / (3 + 3)
    bce = 2 * BIG / 16  # two wrong pixels cost 100 each, right ones ~0
    assert out["dice"].item() == pytest.approx(dice, abs=1e-5)
    assert out["bce"].item() == pytest.approx(bce, rel=1e-5)
    assert out["loss"].item() == pytest.approx(2 * dice + 0.5 * bce, rel=1e-5)


def test_dice_is_per_object_mean_not_pooled():
    logits, target = _case()
    perfect = torch.zeros(1, 4, 4, dtype=torch.bool)
    perfect[0, 2:4, 2:4] = True
    logits2 = torch.cat([logits, torch.where(perfect, BIG, -BIG)])
    target2 = torch.cat([target, perfect])
    out = DiceBCELoss()(logits2, target2)
    assert out["dice"].item() == pytest.approx((1 / 3 + 0) / 2, abs=1e-5)  # pooled would be 1 - 12/14


def test_dice_ce_matches_monai():
    torch.manual_seed(0)
    logits = torch.randn(5, 16, 16)
    target = torch.rand(5, 16, 16) > 0.6
    ours = DiceCELoss(lambda_dice=0.7, lambda_ce=1.3)(logits, target)
    ref = MonaiDiceCELoss(sigmoid=True, lambda_dice=0.7, lambda_ce=1.3)(
        logits[:, None], target[:, None].float()
    )
    assert ours["loss"].item() == pytest.approx(ref.item(), rel=1e-5)
    assert set(ours) == {"loss", "dice", "ce"}


def test_sam2_loss_hand_values():
    logits, target = _case()
    out = SAM2Loss(iou_loss="mse")(
        logits, target, iou_pred=torch.tensor([[0.7]]), obj_score=torch.zeros(1, 1)
    )
    focal = (BIG * 0.75 + BIG * 0.25) / 16  # FP pixel weighted 1 - alpha, FN pixel alpha; (1 - pt)^2 = 1
    dice = 1 - (2 * 2 + 1) / (3 + 3 + 1)  # SAM2 smooths with 1
    iou = (0.7 - 2 / 4) ** 2
    obj = math.log(2)
    assert out["focal"].item() == pytest.approx(focal, rel=1e-5)
    assert out["dice"].item() == pytest.approx(dice, abs=1e-6)
    assert out["iou"].item() == pytest.approx(iou, abs=1e-6)
    assert out["obj"].item() == pytest.approx(obj, abs=1e-6)
    assert out["loss"].item() == pytest.approx(20 * focal + dice + iou + obj, rel=1e-5)
    l1 = SAM2Loss(iou_loss="l1")(logits, target, iou_pred=torch.tensor([[0.7]]))
    assert l1["iou"].item() == pytest.approx(0.2, abs=1e-6)
    assert "obj" not in l1


def test_sam2_multimask_backprops_best_mask_only_and_iou_on_all():
    _, target = _case()
    good = torch.where(target, 3.0, -3.0)
    logits = torch.stack([-good, good, torch.zeros_like(good)], dim=1).requires_grad_(True)  # [1, 3, 4, 4]
    iou_pred = torch.full((1, 3), 0.5, requires_grad=True)
    out = SAM2Loss()(logits, target, iou_pred=iou_pred)
    single = SAM2Loss()(good.clone(), target)
    assert out["focal"].item() == pytest.approx(single["focal"].item(), rel=1e-6)
    out["loss"].backward()
    assert logits.grad[:, 1].abs().sum() > 0
    assert logits.grad[:, 0].abs().sum() == 0 and logits.grad[:, 2].abs().sum() == 0
    assert (iou_pred.grad.abs() > 0).all()


def test_sam2_absent_object_trains_only_object_score():
    logits = torch.randn(2, 8, 8, requires_grad=True)
    target = torch.zeros(2, 8, 8, dtype=torch.bool)
    target[0, 2:5, 2:5] = True  # object 1 is absent
    out = SAM2Loss()(logits, target, obj_score=torch.zeros(2, 1))
    out["loss"].backward()
    assert logits.grad[1].abs().sum() == 0 and logits.grad[0].abs().sum() > 0


def test_multimask_selection_in_dice_bce():
    _, target = _case()
    good = torch.where(target, BIG, -BIG)
    logits = torch.stack([-good, good], dim=1)
    assert DiceBCELoss()(logits, target)["loss"].item() == pytest.approx(0.0, abs=1e-4)


def test_empty_batch_gives_zero():
    out = SAM2Loss()(torch.zeros(0, 3, 8, 8, requires_grad=True), torch.zeros(0, 8, 8), torch.zeros(0, 3))
    assert out["loss"].item() == 0.0
    out["loss"].backward()


@pytest.mark.parametrize("cls", [DiceBCELoss, DiceCELoss, SAM2Loss])
def test_bad_shapes(cls):
    loss = cls()
    with pytest.raises(ValueError, match=r"\(2, 8, 9\)"):
        loss(torch.zeros(2, 8, 8), torch.zeros(2, 8, 9))
    with pytest.raises(ValueError, match=r"\(8, 8\)"):
        loss(torch.zeros(8, 8), torch.zeros(8, 8))


def test_bad_sam2_inputs_and_options():
    with pytest.raises(ValueError, match=r"\(2, 2\)"):
        SAM2Loss()(torch.zeros(2, 3, 8, 8), torch.zeros(2, 8, 8), iou_pred=torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"\(3, 1\)"):
        SAM2Loss()(torch.zeros(2, 8, 8), torch.zeros(2, 8, 8), obj_score=torch.zeros(3, 1))
    with pytest.raises(ValueError, match="huber"):
        SAM2Loss(iou_loss="huber")
    with pytest.raises(ValueError, match="1.5"):
        SAM2Loss(alpha=1.5)
    with pytest.raises(ValueError, match="-1.0"):
        DiceBCELoss(bce_weight=-1.0)


@pytest.mark.parametrize("path", sorted(CONF.glob("*.yaml")), ids=lambda p: p.stem)
def test_loss_configs_instantiate(path):
    loss = instantiate(OmegaConf.load(path))
    out = loss(torch.randn(2, 3, 16, 16), torch.rand(2, 16, 16) > 0.5, torch.rand(2, 3), torch.randn(2, 1))
    assert torch.isfinite(out["loss"])
