"""SAM / MedSAM (sam_family): building at small sizes, strict loading of Meta-format files, parity with
``segment_anything.SamPredictor``, preprocessing and trainable presets. CPU, random weights, 64 px."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from medseg.train.checkpoint import CheckpointError
from tests.conftest import compose_cfg

SAM_MEAN, SAM_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
S = 64  # 4 x 4 tokens: the smallest size the tests use


@pytest.fixture(scope="module")
def meta_file(tmp_path_factory):
    """A Meta-format SAM ViT-B file (``torch.save(sam.state_dict())`` of the registry's 1024 px model)."""
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    sam = sam_model_registry["vit_b"](checkpoint=None)
    with torch.no_grad():  # non-zero position tables, so interpolation is visible
        sam.image_encoder.pos_embed.normal_(0, 0.02)
        for blk in sam.image_encoder.blocks:
            blk.attn.rel_pos_h.normal_(0, 0.02)
            blk.attn.rel_pos_w.normal_(0, 0.02)
    path = tmp_path_factory.mktemp("sam") / "sam_vit_b_01ec64.pth"
    sd = sam.state_dict()
    torch.save(sd, path)
    return path, sd


def _normalize():
    from sam_family.preprocess import MeanStd

    return MeanStd(mean=SAM_MEAN, std=SAM_STD, scale=255.0)


def test_meta_file_loads_strictly_with_interpolated_positions(meta_file):
    from sam_family.build import build_sam_model, resize_pos_embed, resize_rel_pos

    path, sd = meta_file
    model = build_sam_model("vit_b", image_size=S, checkpoint=str(path), normalize=_normalize())
    got = model.state_dict()
    assert set(got) == set(sd)  # Meta's key names, nothing added or dropped
    assert got["image_encoder.pos_embed"].shape == (1, S // 16, S // 16, 768)
    assert torch.equal(
        got["image_encoder.pos_embed"], resize_pos_embed(sd["image_encoder.pos_embed"], S // 16)
    )
    g = "image_encoder.blocks.2.attn.rel_pos_h"  # global attention: follows the image size
    assert got[g].shape == (2 * S // 16 - 1, 64) and torch.equal(
        got[g], resize_rel_pos(sd[g], 2 * S // 16 - 1)
    )
    w = "image_encoder.blocks.0.attn.rel_pos_h"  # windowed: size-independent, loaded as is
    assert got[w].shape == (27, 64) and torch.equal(got[w], sd[w])
    for k in ("mask_decoder.iou_token.weight", "prompt_encoder.point_embeddings.2.weight"):
        assert torch.equal(got[k], sd[k])
    assert model.weights_info["source"].endswith("sam_vit_b_01ec64.pth") and model.weights_info["sha256"]


def test_interpolated_rel_pos_equals_segment_anythings_own(meta_file):
    """Resizing the global rel_pos when loading is what segment_anything does at run time for other sizes."""
    from segment_anything.modeling.image_encoder import get_rel_pos

    from sam_family.build import resize_rel_pos

    rel = meta_file[1]["image_encoder.blocks.5.attn.rel_pos_w"]
    n = S // 16
    assert torch.allclose(
        get_rel_pos(n, n, resize_rel_pos(rel, 2 * n - 1)), get_rel_pos(n, n, rel), atol=1e-7
    )


def test_vit_l_file_into_vit_b_is_refused_naming_the_file(tmp_path):
    """Only the shapes that name a variant are needed to refuse it (a real ViT-L file: the slow test below)."""
    from sam_family.build import build_sam_model

    path = tmp_path / "sam_vit_l_0b3195.pth"
    torch.save(
        {
            "image_encoder.patch_embed.proj.weight": torch.zeros(1024, 3, 16, 16),
            "image_encoder.pos_embed": torch.zeros(1, 64, 64, 1024),
        },
        path,
    )
    with pytest.raises(
        CheckpointError,
        match=r"sam_vit_l_0b3195\.pth: checkpoint is for SAM 'vit_l' but model.variant is 'vit_b'",
    ):
        build_sam_model("vit_b", image_size=S, checkpoint=str(path))


@pytest.mark.slow
def test_real_vit_l_file_into_vit_b_is_refused(tmp_path):
    from segment_anything import sam_model_registry

    from sam_family.build import build_sam_model

    path = tmp_path / "large.pth"
    torch.save(sam_model_registry["vit_l"](checkpoint=None).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"large\.pth: checkpoint is for SAM 'vit_l'.*model=sam_vit_l"):
        build_sam_model("vit_b", image_size=S, checkpoint=str(path))


def test_broken_files_are_one_line_errors(meta_file, tmp_path):
    from sam_family.build import build_sam_model

    _, sd = meta_file
    missing = tmp_path / "missing_key.pth"
    torch.save({k: v for k, v in sd.items() if k != "mask_decoder.iou_token.weight"}, missing)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(meta_file[0].read_bytes()[:100_000])
    code = tmp_path / "code.pth"
    torch.save({"obj": Path("x"), **{k: sd[k] for k in list(sd)[:2]}}, code)  # a Path needs code to unpickle
    cases = {
        missing: r"missing_key\.pth: keys do not match SAM vit_b: 1 missing keys \(first: mask_decoder\.iou_token\.weight\)",
        truncated: r"truncated\.pth: corrupt or truncated checkpoint",
        code: r"code\.pth: refused: the file is a pickle that needs code",
        tmp_path / "absent.pth": r"model.checkpoint=.*absent\.pth: file not found",
    }
    for path, pattern in cases.items():
        with pytest.raises((CheckpointError, FileNotFoundError), match=pattern) as err:
            build_sam_model("vit_b", image_size=S, checkpoint=str(path))
        assert "\n" not in str(err.value)


def test_auto_checkpoint_missing_names_file_and_download_command(tmp_path):
    from sam_family.build import build_sam_model

    with pytest.raises(
        FileNotFoundError,
        match=r"medsam_vit_b\.pth not found.*download_ckpts\.sh medsam.*model\.checkpoint=null",
    ):
        build_sam_model(
            "vit_b", image_size=S, checkpoint="auto", default_checkpoint=str(tmp_path / "medsam_vit_b.pth"),
            download_hint="checkpoints/download_ckpts.sh medsam",
        )  # fmt: skip


@pytest.mark.parametrize("bad", [40, 48 + 1, 2048])
def test_bad_image_size_is_refused(bad):
    from sam_family.build import check_image_size

    with pytest.raises(ValueError, match=rf"model.image_size={bad} must be a multiple of 16"):
        check_image_size(bad)


# ---------------------------------------------------------------------- parity with SamPredictor
@pytest.fixture(scope="module")
def net_and_predictor():
    from segment_anything import SamPredictor
    from segment_anything.modeling import Sam

    from sam_family.build import build_sam_net

    torch.manual_seed(1)
    net = build_sam_net("vit_b", S, _normalize()).eval()
    with torch.no_grad():  # random but not degenerate: position tables and tokens away from zero init
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    sam = Sam(net.image_encoder, net.prompt_encoder, net.mask_decoder, SAM_MEAN, SAM_STD).eval()
    return net, SamPredictor(sam)


def _through_transform(img: np.ndarray) -> dict:
    """The image as our data layer delivers it to a SAM model (longest side S, ImageNet-normalised, padded)."""
    from medseg.data.transforms import build_transform

    case = {"image": img[None].astype(np.float32), "label": None, "case_id": "x", "spacing": (1.0, 1.0, 1.0)}
    return build_transform({"modality": "rgb"}, S, resize="longest_side")(case)


@pytest.mark.parametrize("shape", [(S, S), (S, 48)], ids=["square", "padded"])
def test_parity_with_sam_predictor_box_and_clicks(net_and_predictor, shape):
    net, predictor = net_and_predictor
    img = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    predictor.set_image(img)
    sample = _through_transform(img)
    assert sample["valid_hw"] == shape
    with torch.no_grad():
        embed = net.encode(sample["image"])
        assert torch.allclose(embed, predictor.features, atol=1e-5)
        box = np.array([4, 6, 40, 50], np.float32)
        pts, lab = np.array([[10, 20], [30, 40], [5, 5]], np.float32), np.array([1, 0, 1])
        prompts = [
            ({"box": box}, {"boxes": torch.tensor(box)[None]}),
            ({"point_coords": pts, "point_labels": lab}, {"points": torch.tensor(pts)[None], "point_labels": torch.tensor(lab)[None]}),
            ({"point_coords": pts[:1], "point_labels": lab[:1], "box": box},
             {"points": torch.tensor(pts[:1])[None], "point_labels": torch.tensor(lab[:1])[None], "boxes": torch.tensor(box)[None]}),
        ]  # fmt: skip
        for theirs, ours in prompts:
            for multimask in (False, True):
                _, iou, low = predictor.predict(**theirs, multimask_output=multimask, return_logits=True)
                lo, io = net.decode(embed, torch.tensor([0]), **ours, multimask_output=multimask)
                assert np.abs(low).max() > 0.1  # a real signal, not zeros compared with zeros
                assert np.abs(lo[0].numpy() - low).max() <= 1e-5, (theirs.keys(), multimask)
                assert np.abs(io[0].numpy() - iou).max() <= 1e-5


def test_task_forward_equals_predictor_masks(net_and_predictor, tmp_path):
    """The engine's path (SamImageTask.forward on an ImageBatch, several objects) gives the predictor's masks."""
    from medseg.data.batch import ImageBatch
    from medseg.run.app import build_task
    from sam_family.task import SamImageTask

    net, predictor = net_and_predictor
    img = np.random.default_rng(1).integers(0, 256, (S, S, 3), dtype=np.uint8)
    predictor.set_image(img)
    boxes = torch.tensor([[4.0, 6.0, 40.0, 50.0], [20.0, 10.0, 60.0, 30.0]])
    n = boxes.shape[0]
    batch = ImageBatch(
        images=_through_transform(img)["image"], masks=torch.zeros(n, S, S, dtype=torch.bool),
        obj_img=torch.zeros(n, dtype=torch.long), obj_class=torch.ones(n, dtype=torch.long), boxes=boxes,
        points=torch.zeros(n, 0, 2), point_labels=torch.zeros(n, 0, dtype=torch.long),
        mask_prompts=torch.zeros(n, S, S), case_ids=["x"], spacing=torch.ones(1, 2),
    )  # fmt: skip
    cfg = compose_cfg(
        "train_2d", ["model=sam_vit_b", f"model.image_size={S}", "prompt=box", "loss=dice_bce"], tmp_path
    )
    task = build_task(
        cfg, SimpleNamespace(train_samples=None, collate=None, label_names={0: "bg", 1: "fg"}), "task_2d"
    )
    assert isinstance(task, SamImageTask)
    with torch.no_grad():
        best = task.predict(net, batch)
        want = np.concatenate(
            [predictor.predict(box=b.numpy(), multimask_output=False, return_logits=True)[0] for b in boxes]
        )
    assert best.shape == (n, S, S)
    assert np.abs(want).max() > 0.1
    assert (best - torch.from_numpy(want)).abs().max() <= 1e-5


# ---------------------------------------------------------------------- preprocessing and presets
def test_normalisers_match_sam_and_medsam_definitions():
    from medseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
    from sam_family.preprocess import MinMax

    rgb = torch.rand(2, 3, 8, 8) * 0.5 + 0.2
    x = (rgb - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    sam = (rgb * 255 - torch.tensor(SAM_MEAN).view(1, 3, 1, 1)) / torch.tensor(SAM_STD).view(1, 3, 1, 1)
    assert torch.allclose(_normalize()(x), sam, atol=1e-4)
    mm = MinMax()(x)
    for b in range(2):
        want = (rgb[b] - rgb[b].min()) / (rgb[b].max() - rgb[b].min())
        assert torch.allclose(mm[b], want, atol=1e-5)
    flat = (0.3 - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    out = MinMax()(flat.expand(1, 3, 4, 4))
    assert torch.isfinite(out).all() and out.abs().max() < 1e-5  # a constant grey image -> 0, not NaN


def test_trainable_presets_and_per_group_learning_rates(net_and_predictor):
    from omegaconf import OmegaConf

    from medseg.train.optim import build_optimizer
    from sam2_train.trainable import apply_trainable
    from sam_family.model import PRESETS

    net = net_and_predictor[0]
    want = {
        "full": {"image_encoder", "prompt_encoder", "mask_decoder"},
        "decoder_only": {"mask_decoder"},
        "frozen_image_encoder": {"prompt_encoder", "mask_decoder"},
        "frozen_prompt_encoder": {"image_encoder", "mask_decoder"},
    }
    try:
        for preset, parts in want.items():
            apply_trainable(net, preset, presets=PRESETS)
            on = {n.split(".")[0] for n, p in net.named_parameters() if p.requires_grad}
            assert on == parts, preset
        apply_trainable(net, "full", presets=PRESETS)
        cfg = OmegaConf.create(
            {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-4, "weight_decay": 0.0,
             "param_groups": [{"pattern": "image_encoder.*", "lr": 1e-5}]}
        )  # fmt: skip
        groups = {g["name"]: g["lr"] for g in build_optimizer(cfg, net).param_groups}
        assert groups == {"image_encoder.*": 1e-5, "default": 1e-4}
        with pytest.raises(ValueError, match="model.trainable='memory_only' is not a preset"):
            apply_trainable(net, "memory_only", presets=PRESETS)
    finally:
        for p in net.parameters():
            p.requires_grad_(True)


@pytest.mark.parametrize("name", ["sam_vit_b", "medsam_vit_b"])
def test_model_config_builds_with_its_preprocessing(name, tmp_path):
    from sam_family.model import SamNet
    from sam_family.preprocess import MeanStd, MinMax

    cfg = compose_cfg(
        "train_2d",
        [f"model={name}", f"model.image_size={S}", "model.checkpoint=null", "model.trainable=decoder_only"],
        tmp_path,
    )
    net = instantiate(cfg.model.net)
    assert isinstance(net, SamNet) and net.image_size == S and net.variant == "vit_b"
    assert isinstance(net.normalize, {"sam_vit_b": MeanStd, "medsam_vit_b": MinMax}[name])
    assert cfg.model.preprocess.resize == {"sam_vit_b": "longest_side", "medsam_vit_b": "square"}[name]
    assert {n.split(".")[0] for n, p in net.named_parameters() if p.requires_grad} == {"mask_decoder"}
    assert net.weights_info["source"] == "random"
