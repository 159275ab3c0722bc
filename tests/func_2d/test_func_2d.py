"""The 2D SAM2 step equals Meta's SAM2ImagePredictor on the same weights and prompts; the memory bank."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from func_2d.memory_bank import MemoryBank, condition_on_bank, encode_memories
from func_2d.sam2_image import decode_objects, encode_images, upsample
from sam2_train import build_sam2_model

S = 128
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = build_sam2_model("sam2.1_hiera_t", image_size=S).eval()
    with torch.no_grad():  # make masks non-trivial with random weights (as the 3D parity test does)
        for mlp in m.sam_mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(8.0)
    return m


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(1)
    img = (rng.random((S, S, 3)) * 60).astype(np.uint8)
    yy, xx = np.mgrid[:S, :S]
    img[((yy - 40) / 20) ** 2 + ((xx - 90) / 28) ** 2 < 1] += 150  # object right of centre, upper half
    return img


def _meta(model, image):
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    pred = SAM2ImagePredictor(model)
    pred._bb_feat_sizes = [(S // 4, S // 4), (S // 8, S // 8), (S // 16, S // 16)]
    pred.set_image(image)
    return pred


def _ours(model, image):
    x = torch.from_numpy(image).permute(2, 0, 1).float() / 255.0
    return encode_images(model, ((x - MEAN) / STD)[None])


def _ours_decoded(model, image, n_objects: int, **prompts):
    """Our low-res logits and IoU predictions for ``n_objects`` prompted objects of the one ``image``."""
    feats = _ours(model, image)
    low, ious, _, _ = decode_objects(
        model, feats.image_embed, feats.high_res, torch.zeros(n_objects, dtype=torch.long), **prompts
    )
    return low, ious


@torch.no_grad()
def test_box_prompts_equal_meta_image_predictor(model, image):
    boxes = np.array([[60, 18, 120, 62], [10, 70, 50, 120]], np.float32)
    meta_logits, meta_iou, _ = _meta(model, image).predict(
        box=boxes, multimask_output=False, return_logits=True
    )
    low, ious = _ours_decoded(model, image, 2, boxes=torch.from_numpy(boxes), multimask_output=False)
    ours = upsample(low, S)
    assert ours.shape == tuple(torch.as_tensor(meta_logits).shape)
    diff = (ours - torch.as_tensor(meta_logits)).abs().max().item()
    assert diff <= 1e-4, diff
    assert torch.allclose(ious, torch.as_tensor(meta_iou), atol=1e-5)
    assert ours.std() > 0.5, "masks are constant: the comparison would be empty"


@torch.no_grad()
def test_click_prompt_multimask_equals_meta(model, image):
    pts = np.array([[90.0, 40.0]], np.float32)  # (x, y): inside the object
    meta_logits, meta_iou, _ = _meta(model, image).predict(
        point_coords=pts, point_labels=np.array([1]), multimask_output=True, return_logits=True
    )
    low, ious = _ours_decoded(
        model,
        image,
        1,
        points=torch.from_numpy(pts)[None],
        point_labels=torch.ones(1, 1, dtype=torch.long),
        multimask_output=True,
    )
    diff = (upsample(low, S)[0] - torch.as_tensor(meta_logits)).abs().max().item()
    assert diff <= 1e-4, diff
    assert torch.allclose(ious[0], torch.as_tensor(meta_iou), atol=1e-5)


@torch.no_grad()
def test_objects_on_different_images_use_their_image(model, image):
    """Batched objects of two images give what each image gives alone."""
    other = np.ascontiguousarray(image[::-1, ::-1])
    box = torch.tensor([[60.0, 18.0, 120.0, 62.0]])
    both = _ours(model, np.stack([image, other])[0])  # image alone
    x = torch.stack([torch.from_numpy(i).permute(2, 0, 1).float() / 255.0 for i in (image, other)])
    feats = encode_images(model, (x - MEAN) / STD)
    low, *_ = decode_objects(
        model,
        feats.image_embed,
        feats.high_res,
        torch.tensor([1, 0]),
        boxes=box.repeat(2, 1),
        multimask_output=False,
    )
    alone0, *_ = decode_objects(
        model, both.image_embed, both.high_res, torch.tensor([0]), boxes=box, multimask_output=False
    )
    assert torch.allclose(low[1], alone0[0], atol=1e-4)
    assert not torch.allclose(low[0], low[1], atol=1e-3)


def test_memory_bank_retrieval_and_replacement():
    bank = MemoryBank(size=2, k=1, min_iou=0.5)
    f = torch.zeros(4, 2, 2)
    k1, k2, k3 = (
        torch.nn.functional.normalize(torch.tensor(v), dim=0)
        for v in ([1.0, 0, 0], [0, 1.0, 0], [0.9, 0.1, 0])
    )
    bank.add(f, f, k1, cls=1, quality=0.9)
    bank.add(f + 1, f, k2, cls=1, quality=0.2)  # below min_iou: not kept
    assert len(bank) == 1
    bank.add(f + 2, f, k2, cls=1, quality=0.9)
    bank.add(f + 3, f, k3, cls=2, quality=0.9)  # full: replaces the most similar entry (k1)
    assert len(bank) == 2 and bank.cls == [2, 1]
    assert bank.retrieve(k2, cls=1) == [1] and bank.retrieve(k1, cls=3) == []
    state = bank.state_dict()
    other = MemoryBank(size=2, k=1)
    other.load_state_dict(state)
    assert other.cls == bank.cls and torch.equal(other.feats[0], bank.feats[0])


@torch.no_grad()
def test_memory_attention_conditions_on_the_bank(model, image):
    feats = _ours(model, image)
    box = torch.tensor([[60.0, 18.0, 120.0, 62.0]])
    obj_img, cls = torch.zeros(1, dtype=torch.long), torch.ones(1, dtype=torch.long)
    low, ious, scores, _ = decode_objects(
        model, feats.image_embed, feats.high_res, obj_img, boxes=box, multimask_output=False
    )
    bank = MemoryBank(size=4, k=2, min_iou=0.0)
    same = condition_on_bank(model, feats, bank, obj_img, cls)
    assert torch.equal(same[0], feats.image_embed[0]), "an empty bank must leave SAM2's no-memory features"
    mem, pos = encode_memories(model, feats, obj_img, upsample(low, S), scores)
    assert mem.shape[1] == model.mem_dim
    bank.add(mem[0], pos[0], torch.nn.functional.normalize(feats.image_embed.mean((2, 3))[0], dim=0), 1, 1.0)
    cond = condition_on_bank(model, feats, bank, obj_img, cls)
    assert cond.shape == feats.image_embed.shape
    assert not torch.allclose(cond, feats.image_embed, atol=1e-3)


def test_memory_bank_training_run(data_root, tmp_path):
    from tests.conftest import run_entry

    out = tmp_path / "bank"
    run_entry(
        "train_2d",
        [
            f"dataset.root={data_root / 'kvasir'}",
            "func_2d.memory_bank=true",
            "func_2d.bank_size=4",
            "func_2d.bank_min_iou=0.0",
        ],
        out,
    )
    ck = torch.load(out / "checkpoint_last.pth", map_location="cpu", weights_only=True)
    assert 0 < len(ck["task"]["bank"]["feats"]) <= 4
