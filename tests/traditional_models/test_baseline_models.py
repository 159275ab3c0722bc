"""traditional_models: shapes, training step, frozen encoder, weight loading, configs."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torchvision
from hydra.utils import instantiate
from omegaconf import OmegaConf

from medseg.train.losses import DiceBCELoss
from tests.conftest import ROOT
from traditional_models.resnet50_frozen_decoder import ResNet50FrozenDecoder
from traditional_models.resnet_box_prompt import ResNetBoxPrompt, rasterize_boxes
from traditional_models.unet import UNet

CONF = ROOT / "conf" / "model"
S = 64


def _batch() -> SimpleNamespace:
    torch.manual_seed(0)
    masks = torch.zeros(3, S, S, dtype=torch.bool)
    masks[0, 8:24, 8:24] = True
    masks[1, 30:60, 20:40] = True
    masks[2, 5:15, 40:60] = True
    return SimpleNamespace(
        images=torch.randn(2, 3, S, S),
        boxes=torch.tensor([[8.0, 8, 23, 23], [20, 30, 39, 59], [40, 5, 59, 14]]),
        obj_img=torch.tensor([0, 1, 1]),
        obj_class=torch.tensor([1, 2, 1]),
        masks=masks,
    )


MODELS = {
    "resnet_box_prompt": lambda: ResNetBoxPrompt(encoder="resnet18", decoder_channels=(32, 16, 16, 8)),
    "resnet50_frozen_decoder": lambda: ResNet50FrozenDecoder(num_classes=2, decoder_channels=32),
    "unet": lambda: UNet(num_classes=2, channels=(8, 16, 32), strides=(2, 2), num_res_units=1),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_shape_and_training_step(name):
    model = MODELS[name]()
    batch = _batch()
    model.train()
    logits = model(batch)
    assert logits.shape == (3, S, S)
    assert torch.equal(
        logits, model.forward_objects(batch.images, batch.boxes, batch.obj_img, batch.obj_class)
    )
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers() if n.startswith("encoder.")}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    DiceBCELoss()(logits, batch.masks)["loss"].backward()
    opt.step()
    changed = [n for n, p in model.named_parameters() if n in trainable and not torch.equal(p, trainable[n])]
    assert len(changed) > 0.5 * len(trainable)
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
    model(batch)  # a second train-mode forward must not touch the frozen encoder's BN statistics
    for n, b in model.named_buffers():
        if n in buffers:
            assert torch.equal(b, buffers[n]), n


def test_resnet50_encoder_is_frozen_and_stays_eval():
    model = ResNet50FrozenDecoder(num_classes=1, decoder_channels=16).train()
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.decoder.parameters())
    assert not model.encoder.training and model.decoder.training


def test_resnet50_encoder_weights_load(tmp_path):
    ref = torchvision.models.resnet50(weights=None)
    path = tmp_path / "resnet50.pth"
    torch.save(ref.state_dict(), path)
    model = ResNet50FrozenDecoder(num_classes=1, encoder_weights=str(path), decoder_channels=16)
    assert torch.equal(model.encoder[0].weight, ref.conv1.weight)
    assert torch.equal(model.encoder[7][2].conv3.weight, ref.layer4[2].conv3.weight)


def test_encoder_weights_errors(tmp_path):
    from medseg.train.checkpoint import CheckpointError

    missing = tmp_path / "nope" / "resnet50.pth"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        ResNet50FrozenDecoder(encoder_weights=str(missing))
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=str(corrupt)):
        ResNet50FrozenDecoder(encoder_weights=str(corrupt))
    wrong = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wrong)
    with pytest.raises(CheckpointError, match=str(wrong)):
        ResNet50FrozenDecoder(encoder_weights=str(wrong))


def test_bad_options_and_inputs():
    with pytest.raises(ValueError, match="resnet99"):
        ResNetBoxPrompt(encoder="resnet99")
    with pytest.raises(ValueError, match="0"):
        UNet(num_classes=0)
    model = UNet(num_classes=2, channels=(8, 16), strides=(2,))
    b = _batch()
    with pytest.raises(ValueError, match=r"\[2, 3, 1\]"):
        model.forward_objects(b.images, b.boxes, b.obj_img, torch.tensor([2, 3, 1]))
    with pytest.raises(ValueError, match="obj_class is required"):
        model.forward_objects(b.images, b.boxes, b.obj_img)
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        ResNetBoxPrompt().forward_objects(b.images, torch.zeros(3, 5), b.obj_img)


def test_rasterize_boxes_and_predict_labels():
    m = rasterize_boxes(torch.tensor([[8.0, 0, 15, 31]]), (32, 32), (4, 4))
    assert m[0, 0].tolist() == [[0, 1, 0, 0]] * 4
    model = UNet(num_classes=2, channels=(8, 16), strides=(2,)).eval()
    labels = model.predict_labels(torch.randn(1, 3, 32, 32))
    assert labels.shape == (1, 32, 32) and int(labels.max()) <= 2


@pytest.mark.parametrize("name", ["resnet_box_prompt", "resnet50_frozen_decoder", "unet", "yolo_seg"])
def test_baseline_model_configs_instantiate(name):
    cfg = OmegaConf.load(CONF / f"{name}.yaml")
    cfg.image_size = S
    root = OmegaConf.create({"model": cfg})
    if cfg.name == "resnet_box_prompt":
        root.model.net.decoder_channels = [16, 16, 8, 8]
    net = instantiate(root.model.net)
    if cfg.family == "yolo":
        assert net.image_size == S and net.model == "yolo11l-seg.yaml"  # seed 004
        return
    assert net.image_size == S
    b = _batch()
    with torch.no_grad():
        out = net.forward_objects(b.images, b.boxes, b.obj_img, torch.ones_like(b.obj_img))
    assert out.shape == (3, S, S)
