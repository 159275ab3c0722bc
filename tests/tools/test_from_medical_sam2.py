"""tools/from_medical_sam2.py: Medical-SAM2 / Medical SAM2-N commands become commands of this suite."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from tests.conftest import ROOT, compose_cfg, run_cli

spec = importlib.util.spec_from_file_location("from_medical_sam2", ROOT / "tools" / "from_medical_sam2.py")
fms = sys.modules["from_medical_sam2"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(fms)

# The example commands of Medical-SAM2's README and of a Medical SAM2-N style README (all sizes).
SIZES = [("tiny", "t"), ("small", "s"), ("base_plus", "b+"), ("large", "l")]
README = [
    "python train_2d.py -net sam2 -exp_name REFUGE_MedSAM2 -vis 1 -sam_ckpt ./checkpoints/sam2_hiera_small.pt "
    "-sam_config sam2_hiera_s -image_size 1024 -out_size 1024 -b 4 -val_freq 1 -dataset REFUGE -data_path ./data/REFUGE",
    "python train_3d.py -net sam2 -exp_name BTCV_MedSAM2 -sam_ckpt ./checkpoints/sam2_hiera_small.pt "
    "-sam_config sam2_hiera_s -image_size 1024 -val_freq 1 -prompt bbox -prompt_freq 2 -dataset btcv -data_path ./data/btcv",
    *[
        f"python train_2d.py -net sam2 -exp_name REFUGE_{w} -vis 1 -sam_ckpt ./checkpoints/sam2_hiera_{w}.pt "
        f"-sam_config sam2_hiera_{s} -image_size 1024 -out_size 1024 -b 4 -val_freq 1 -dataset REFUGE "
        "-data_path ./data/REFUGE"
        for w, s in SIZES
    ],
    *[
        f"python train_3d.py -net sam2 -exp_name BTCV_{w} -sam_ckpt ./checkpoints/sam2_hiera_{w}.pt "
        f"-sam_config sam2_hiera_{s} -image_size 1024 -val_freq 1 -prompt bbox -prompt_freq 2 -dataset btcv "
        "-data_path ./data/btcv"
        for w, s in SIZES
    ],
    "python inference_3d.py -checkpoint ./logs/BTCV_MedSAM2_x/Model/best_dice_epoch.pth -sam_config sam2_hiera_s "
    "-data_path ./data/btcv -dataset btcv -prompt bbox -output_dir ./inference_results -save_vis",
    "bash train_both_models.sh --high-memory",
    "bash train_both_models.sh --batch-size 8",
    "bash train_both_models.sh --batch-size-tiny 16 --batch-size-small 8",
    "bash train_both_models.sh --parallel --gpu-device-tiny 0 --gpu-device-small 1",
    "CUDA_VISIBLE_DEVICES=1 python train_3d.py -net sam2 -sam_config sam2_hiera_t -b 2 -dataset btcv "
    "-data_path ./data/btcv -distributed 0,1",
]


def _jobs(cmd: list[str]) -> tuple[str, list[list[str]]]:
    """(root config, override lists of every job) of one translated command."""
    script = next(w for w in cmd if w.endswith(".py"))
    overrides = [w for w in cmd[cmd.index(script) + 1 :] if w != "-m"]
    jobs = [[]]
    for o in overrides:
        key, _, value = o.partition("=")
        values = value.split(",") if "-m" in cmd and "," in value and "." not in key else [value]
        jobs = [[*j, f"{key}={v}"] for j in jobs for v in values]
    return script[:-3], jobs


@pytest.mark.parametrize("command", README, ids=range(len(README)))
def test_every_readme_command_translates_into_overrides_that_compose(command, tmp_path):
    tr = fms.translate(command)
    assert tr.unknown == [], tr.text()
    assert tr.commands
    for cmd in tr.commands:
        root, jobs = _jobs(cmd)
        for job in jobs:
            compose_cfg(root, job, tmp_path)  # every key and group exists in conf/


def test_refuge_command_maps_each_flag():
    tr = fms.translate(README[0])
    words = tr.commands[0]
    for want in (
        "model=sam2_hiera_s",
        "model.checkpoint=./checkpoints/sam2_hiera_small.pt",
        "model.image_size=1024",
        "trainer.batch_size=4",
        "trainer.val_freq=1",
        "dataset=refuge",
        "dataset.root=./data/REFUGE",
        "task_name=REFUGE_MedSAM2",
        "vis=true",
    ):
        assert want in words
    assert any("-out_size" in n for n in tr.notes)  # explained, not dropped


def test_defaults_of_the_medical_sam2_script_are_written_out():
    tr = fms.translate("python train_3d.py -net sam2 -sam_config sam2_hiera_t -data_path /d")
    cmd = tr.commands[0]
    assert "trainer.batch_size=1" in cmd and "trainer.val_freq=5" in cmd and "func_3d.video_length=2" in cmd
    assert any(n.startswith("from Medical-SAM2's defaults") for n in tr.notes)


def test_train_both_models_high_memory_is_16_for_tiny_and_12_for_small():
    """Seed 004's ``--high-memory`` "sets batch size to 16 for Tiny and 12 for Small"."""
    tiny, small = fms.translate("bash train_both_models.sh --high-memory").commands
    assert "model=sam2_hiera_t" in tiny and "trainer.batch_size=16" in tiny
    assert "model=sam2_hiera_s" in small and "trainer.batch_size=12" in small
    assert "func_3d.video_length=2" in tiny and "func_3d.video_length=2" in small


def test_unknown_flag_is_listed_and_blocks_run(tmp_path):
    tr = fms.translate("python train_2d.py -net sam2 -sam_config sam2_hiera_t -warmup 3 -b 2")
    assert tr.unknown == ["-warmup 3"]
    assert "trainer.batch_size=2" in tr.commands[0]
    bad = fms.translate("python train_2d.py -net sam -sam_config sam2_hiera_t")
    assert any(u.startswith("-net sam") for u in bad.unknown)
    p = run_cli(
        str(ROOT / "tools" / "from_medical_sam2.py"),
        "--run",
        "--",
        "python",
        "train_2d.py",
        "-sam_config",
        "sam2_hiera_t",
        "-warmup",
        "3",
        cwd=tmp_path,
        timeout=60,
    )
    assert p.returncode == 1
    assert "unknown flag (not translated): -warmup 3" in p.stdout
    assert p.stderr.strip().splitlines() == ["error: 1 unknown flag(s): -warmup 3"]
    assert not (tmp_path / "outputs").exists()  # nothing was run


def test_not_a_medical_sam2_command():
    assert fms.main(["python", "train.py", "-net", "sam2"]) == 2


# ---------------------------------------------------------------- issue 23, 2: a faithful translation
def _cfg(command: str, tmp_path):
    (cmd,) = fms.translate(command).commands
    root, (job,) = _jobs(cmd)
    return compose_cfg(root, job, tmp_path)


def test_3d_training_is_medical_sam2s_recipe(tmp_path):
    """Image and prompt encoders frozen; Adam: mask decoder 1e-4, memory modules 1e-8, no weight decay,
    constant lr; BCEWithLogits(pos_weight=2); validation on the Test folder."""
    import torch
    import torch.nn.functional as F
    from hydra.utils import instantiate

    from medseg.train.optim import build_optimizer
    from sam2_train import build_sam2_model
    from sam2_train.trainable import apply_trainable

    cfg = _cfg(README[1], tmp_path)
    assert cfg.dataset.split.val_from == "test"
    assert cfg.scheduler._target_ == "medseg.train.optim.warmup_constant" and cfg.scheduler.warmup_steps == 0
    loss = instantiate(cfg.loss)
    logits, target = torch.randn(2, 8, 8), (torch.rand(2, 8, 8) > 0.5).float()
    want = F.binary_cross_entropy_with_logits(logits, target, pos_weight=torch.tensor([2.0]))
    assert torch.allclose(loss(logits, target)["loss"], want, atol=1e-6)
    model = build_sam2_model("sam2_hiera_t", image_size=64)
    apply_trainable(model, cfg.model.trainable)
    opt = build_optimizer(cfg.optim, model)
    assert isinstance(opt, torch.optim.Adam) and not isinstance(opt, torch.optim.AdamW)
    lr_of = {id(p): g["lr"] for g in opt.param_groups for p in g["params"]}
    assert all(g["weight_decay"] == 0 for g in opt.param_groups)
    for name, p in model.named_parameters():
        part = name.split(".")[0]
        if part in ("image_encoder", "sam_prompt_encoder"):
            assert not p.requires_grad and id(p) not in lr_of, name
        elif part == "sam_mask_decoder":
            assert lr_of[id(p)] == 1e-4, name
        elif part in ("memory_attention", "memory_encoder"):
            assert lr_of[id(p)] == 1e-8, name


def test_2d_training_is_medical_sam2s_recipe(tmp_path):
    import torch
    from hydra.utils import instantiate

    from medseg.train.optim import build_optimizer

    cfg = _cfg(README[0], tmp_path)
    assert cfg.dataset.split.val_from == "test" and cfg.model.trainable == "full"
    assert cfg.scheduler._target_ == "medseg.train.optim.warmup_constant"
    assert cfg.loss.dice_weight == 0 and cfg.loss.bce_weight == 1 and cfg.loss.iou_weight == 0
    net = torch.nn.Linear(2, 2)
    opt = build_optimizer(cfg.optim, net)
    assert type(opt) is torch.optim.Adam and len(opt.param_groups) == 1
    assert opt.param_groups[0]["lr"] == 1e-4 and opt.param_groups[0]["weight_decay"] == 0
    instantiate(cfg.loss)


def test_weights_continues_training_from_the_file():
    tr = fms.translate("python train_3d.py -net sam2 -sam_config sam2_hiera_t -weights ./w.pth -data_path /d")
    (cmd,) = tr.commands
    assert "model.checkpoint=./w.pth" in cmd and "train=false" not in cmd


def test_fidelity_table_has_a_row_for_every_flag(capsys):
    assert fms.main([README[1]]) == 0
    out = capsys.readouterr().out
    assert "# | flag | Medical-SAM2 | here | fidelity |" in out
    rows = [ln for ln in out.splitlines() if ln.startswith("# | -")]
    flags = {r.split("|")[1].split()[0] for r in rows}
    assert {"-net", "-exp_name", "-sam_ckpt", "-sam_config", "-image_size", "-val_freq", "-prompt"} <= flags
    assert {"-prompt_freq", "-dataset", "-data_path", "-b", "-lr", "-video_length"} <= flags  # defaults too
    assert all(r.rstrip(" |").rsplit("|", 1)[-1].strip() in ("exact", "approximate", "ignored") for r in rows)
    assert any("BCEWithLogits" in ln and "loss=medical_sam2_bce" in ln for ln in out.splitlines())


def test_medical_sam2_2d_checkpoint_loads(tmp_path):
    """Medical-SAM2 saves ``{'model': 'sam2', 'state_dict': net.state_dict(), ...}``."""
    import torch

    from sam2_train import build_sam2_model
    from sam2_train.checkpoint import load_sam2_weights

    torch.manual_seed(0)
    src = build_sam2_model("sam2_hiera_t", image_size=64)
    path = tmp_path / "best_dice_epoch.pth"
    torch.save({"model": "sam2", "state_dict": src.state_dict(), "epoch": 3}, path)
    dst = build_sam2_model("sam2_hiera_t", image_size=64)
    load_sam2_weights(dst, path, variant="sam2_hiera_t")
    for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
        assert torch.equal(a, b), k


def test_inference_glob_is_expanded_by_the_shell(tmp_path):
    import subprocess

    ckpt = tmp_path / "logs" / "BTCV_MedSAM2_2024_08_01" / "Model" / "best_dice_epoch.pth"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"x")
    tr = fms.translate(
        "python inference_3d.py -checkpoint ./logs/BTCV_MedSAM2_*/Model/best_dice_epoch.pth "
        "-sam_config sam2_hiera_s -data_path ./data/btcv -dataset btcv"
    )
    line = tr.text().splitlines()[0]
    assert line.startswith("python inference_3d.py ")
    shown = subprocess.run(
        ["bash", "-c", "printf '%s\\n' " + line[len("python inference_3d.py ") :]],
        cwd=tmp_path, capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert "checkpoint=./logs/BTCV_MedSAM2_2024_08_01/Model/best_dice_epoch.pth" in shown


def test_val_from_test_validates_on_the_test_folder(tmp_path):
    from medseg.data import synthetic
    from medseg.data.datasets import build_dataset
    from medseg.data.splits import resolve_splits

    cfg = compose_cfg("train_3d", ["dataset=btcv", "++dataset.split.val_from=test"], tmp_path)
    cfg.dataset.root = str(synthetic.write_btcv(tmp_path / "btcv", n_cases=3, depth=4, size=32))
    ds = build_dataset(cfg.dataset)
    splits = resolve_splits(ds, cfg.dataset.split, None)
    native = {i: ds.native_split(i) for i in ds.case_ids}
    assert splits["val"] == splits["test"] == sorted(i for i, v in native.items() if v == "test")
    assert splits["train"] == sorted(i for i, v in native.items() if v == "train")  # nothing carved off
