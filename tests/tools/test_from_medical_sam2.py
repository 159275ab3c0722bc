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


def test_train_both_models_high_memory_is_one_multirun_over_both_sizes():
    (cmd,) = fms.translate("bash train_both_models.sh --high-memory").commands
    assert cmd[:3] == ["python", "train_3d.py", "-m"]
    assert "model=sam2_hiera_t,sam2_hiera_s" in cmd and "trainer=high_memory" in cmd
    assert not any(w.startswith("trainer.batch_size=") for w in cmd)  # the preset chooses per size


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
