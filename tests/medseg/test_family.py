"""The model-family contract (issue 22): every conf/model yaml names a family that implements
:class:`medseg.family.ModelFamily`; the run layer switches activation checkpointing on through it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra.utils import instantiate

from medseg.family import ModelFamily, build_family
from tests.conftest import compose_cfg

CONF = Path(__file__).resolve().parents[2] / "conf"
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))


@pytest.mark.parametrize("name", MODELS)
def test_every_model_names_a_family_implementing_the_contract(name, tmp_path):
    cfg = compose_cfg("train_2d", [f"model={name}"], tmp_path)
    family = build_family(cfg.model)
    assert isinstance(family, ModelFamily)
    assert "full" in family.presets or family.name in ("cnn", "yolo")


def test_a_model_without_family_is_one_line(tmp_path):
    cfg = compose_cfg("train_2d", ["model=unet", "~model.plugin"], tmp_path)
    with pytest.raises(ValueError, match="model=unet: its yaml names no family"):
        build_family(cfg.model)


@pytest.mark.parametrize(("name", "blocks"), [("sam2.1_hiera_t", 12), ("unet", 0)])
def test_activation_checkpointing_through_the_family(name, blocks, tmp_path):
    """Hiera-T: its 12 blocks; U-Net: none (logged as a warning, not a silent no-op)."""
    from medseg.run.app import prepare_model

    cfg = compose_cfg(
        "train_2d",
        [
            f"model={name}",
            "model.image_size=64",
            "model.checkpoint=null",
            "trainer.activation_checkpointing=true",
        ],
        tmp_path,
    )
    model = instantiate(cfg.model.net)
    assert prepare_model(cfg, SimpleNamespace(), model) == blocks
    if blocks:
        assert list(model.state_dict()) == list(instantiate(cfg.model.net).state_dict())


def test_sam_family_guesses_variant_and_sam2_family_refuses_a_sam_state(tmp_path):
    cfg = compose_cfg(
        "train_2d", ["model=sam_vit_b", "model.image_size=64", "model.checkpoint=null"], tmp_path
    )
    sd = instantiate(cfg.model.net).state_dict()
    assert build_family(cfg.model).guess_variant(sd) == "vit_b"
    cfg2 = compose_cfg("train_2d", ["model=sam2.1_hiera_t"], tmp_path)
    assert build_family(cfg2.model).guess_variant(sd) is None
    assert torch.equal(
        build_family(cfg.model).adapt_state_dict(dict(sd), instantiate(cfg.model.net))[
            "image_encoder.pos_embed"
        ],
        sd["image_encoder.pos_embed"],
    )
