"""Foundation: every SAM2 variant builds from the packaged yaml and loads Meta-format weights strictly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medseg.train.checkpoint import CheckpointError
from medseg.train.params import param_groups, trainable_table
from sam2_train import VARIANTS, build_sam2_model, load_sam2_weights
from sam2_train.checkpoint import guess_variant
from sam2_train.trainable import PRESETS, apply_trainable
from tests.conftest import ROOT, run_cli


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_sam2_model("sam2.1_hiera_t", image_size=64)


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(v, marks=pytest.mark.slow) if v.endswith("_l") else v for v in sorted(VARIANTS)
    ],  # Hiera-L: 6 s each
)
def test_meta_format_round_trip(variant, tmp_path):
    torch.manual_seed(1)
    m = build_sam2_model(variant, image_size=64)
    assert guess_variant(m.state_dict()) == variant
    path = tmp_path / f"{variant}.pt"
    torch.save({"model": m.state_dict()}, path)
    torch.manual_seed(2)
    m2 = build_sam2_model(variant, image_size=64, checkpoint=str(path))
    sd1, sd2 = m.state_dict(), m2.state_dict()
    assert sd1.keys() == sd2.keys()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)


def test_image_size_sets_rope_feature_sizes():
    m = build_sam2_model("sam2.1_hiera_t", image_size=96)
    assert m.image_size == 96
    layer = m.memory_attention.layers[0]
    assert layer.self_attn.freqs_cis.shape[0] == 6 * 6
    x = torch.randn(1, 3, 96, 96)
    out = m.forward_image(x)
    assert out["vision_features"].shape[-2:] == (6, 6)


@pytest.mark.parametrize("size", [48, 100, 2048])
def test_bad_image_size(size):
    with pytest.raises(ValueError, match="model.image_size"):
        build_sam2_model("sam2.1_hiera_t", image_size=size)


def test_unknown_variant():
    with pytest.raises(ValueError, match="sam2_hiera_xl"):
        build_sam2_model("sam2_hiera_xl", image_size=64)


def _bad_files(tmp_path: Path, tiny) -> dict[str, tuple[Path, str]]:
    sd = tiny.state_dict()
    good = tmp_path / "good.pt"
    torch.save({"model": sd}, good)
    data = good.read_bytes()
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(data[: len(data) // 3])
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    pickled = tmp_path / "code.pt"
    torch.save({"model": sd, "obj": Path("x")}, pickled)  # a Path object needs code to unpickle
    other = tmp_path / "small.pt"
    torch.save({"model": build_sam2_model("sam2.1_hiera_s", image_size=64).state_dict()}, other)
    missing = tmp_path / "missing_keys.pt"
    sd2 = dict(sd)
    for k in list(sd2)[:3]:
        del sd2[k]
    torch.save({"model": sd2}, missing)
    extra = tmp_path / "extra_keys.pt"
    torch.save({"model": {**sd, "head.extra.weight": torch.zeros(1)}}, extra)
    return {
        "missing": (tmp_path / "nope.pt", "not found"),
        "truncated": (trunc, "corrupt or truncated"),
        "garbage": (garbage, "not a PyTorch weights file"),
        "code": (pickled, "needs code"),
        "other_variant": (other, "'sam2.1_hiera_s'"),
        "missing_keys": (missing, "3 missing keys"),
        "unexpected_keys": (extra, "1 unexpected keys (first: head.extra.weight)"),
    }


def test_bad_checkpoints_give_one_clear_error(tmp_path, tiny):
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    for name, (path, expected) in _bad_files(tmp_path, tiny).items():
        stat = path.stat() if path.exists() else None
        with pytest.raises(CheckpointError) as ei:
            load_sam2_weights(tiny, path, variant="sam2.1_hiera_t")
        msg = str(ei.value)
        assert str(path) in msg, name
        assert expected in msg, (name, msg)
        assert "\n" not in msg, name
        if stat is not None:  # the file itself is untouched
            assert path.stat().st_mtime == stat.st_mtime and path.stat().st_size == stat.st_size
    after = tiny.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a failed load changed the model"


def test_other_variant_names_expected_and_found(tmp_path, tiny):
    path = tmp_path / "t.pt"
    torch.save({"model": tiny.state_dict()}, path)
    m = build_sam2_model("sam2.1_hiera_s", image_size=64)
    with pytest.raises(
        CheckpointError, match=r"variant 'sam2.1_hiera_t' but model.variant is 'sam2.1_hiera_s'"
    ):
        load_sam2_weights(m, path, variant="sam2.1_hiera_s")


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_trainable_presets(tiny, preset):
    apply_trainable(tiny, preset)
    names = {n for n, p in tiny.named_parameters() if p.requires_grad}
    assert names, preset
    if preset == "decoder_only":
        assert all(n.startswith("sam_mask_decoder.") for n in names)
    if preset == "frozen_image_encoder":
        assert not any(n.startswith("image_encoder.") for n in names)
        assert any(n.startswith("sam_mask_decoder.") for n in names)
    if preset == "frozen_prompt_encoder":
        assert not any(n.startswith("sam_prompt_encoder.") for n in names)
        assert any(n.startswith("image_encoder.") for n in names)
    if preset == "memory_only":
        assert any(n.startswith("memory_attention.") for n in names)
        assert not any(n.startswith(("image_encoder.", "sam_mask_decoder.")) for n in names)
    table = trainable_table(tiny)
    assert "image_encoder" in table and "total" in table
    apply_trainable(tiny, "full")


def test_trainable_errors_and_param_groups(tiny):
    with pytest.raises(ValueError, match="decoder_onyl"):
        apply_trainable(tiny, "decoder_onyl")
    with pytest.raises(ValueError, match="nothing.here"):
        apply_trainable(tiny, ["nothing.here*"])
    apply_trainable(tiny, "full")
    groups = param_groups(tiny, 1e-4, 0.01, [{"pattern": "image_encoder.*", "lr": 1e-5}])
    by = {g["name"]: g for g in groups}
    assert by["image_encoder.*"]["lr"] == 1e-5 and by["default"]["lr"] == 1e-4
    n_enc = sum(1 for n, _ in tiny.named_parameters() if n.startswith("image_encoder."))
    assert len(by["image_encoder.*"]["params"]) == n_enc


def test_hydra_main_after_importing_sam2_train(tmp_path):
    """``import sam2`` initialises Hydra's global state; our package clears it so @hydra.main works."""
    script = tmp_path / "app.py"
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "cfg.yaml").write_text("value: 3\n", encoding="utf-8")
    script.write_text(
        "import sam2_train, sam2, hydra\n"
        "from sam2_train import build_sam2_model\n"
        f"@hydra.main(config_path={str(conf)!r}, config_name='cfg', version_base='1.3')\n"
        "def main(cfg):\n"
        "    m = build_sam2_model('sam2.1_hiera_t', image_size=64)\n"
        "    print('VALUE', cfg.value * 2, type(m).__name__)\n"
        "main()\n",
        encoding="utf-8",
    )
    r = run_cli(
        script,
        f"hydra.run.dir={tmp_path / 'out'}",
        cwd=tmp_path,
        timeout=300,
        env={"PYTHONPATH": str(ROOT)},
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "VALUE 6 SAM2Base" in r.stdout
