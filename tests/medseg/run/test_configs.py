"""Every file of every config group composes and instantiates; launchers, sweepers and multiruns work."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from medseg.eval.tables import read_csv
from sam2_train import VARIANTS
from tests.conftest import CLI_SMALL, CONF, ROOT, compose_cfg, run_cli

GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("local",))
THREE_D = {"btcv_organs", "btcv_one_prompt", "nnunet_multiorgan"}
DATA_FOR = {
    "kvasir": "kvasir",
    "refuge": "refuge",
    "folder2d": "folder2d",
    "btcv": "btcv",
    "nnunet": "nnunet",
    "npz": "npz",
    "flare22_adrenal": "nnunet",
}


def _files(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


ALL = [(g, f) for g in GROUPS for f in _files(g)]
# ViT-L / ViT-H (300 M / 640 M parameters) take minutes to initialise on 2 CPU cores
SLOW_CONFIGS = {("model", "sam_vit_l"), ("model", "sam_vit_h")}
ALL_PARAMS = [
    pytest.param(g, f, id=f"{g}/{f}", marks=[pytest.mark.slow] if (g, f) in SLOW_CONFIGS else [])
    for g, f in ALL
]


def test_every_group_exists():
    for g in (
        "model",
        "dataset",
        "prompt",
        "loss",
        "optim",
        "scheduler",
        "trainer",
        "logger",
        "paths",
        "hydra",
        "launcher",
        "experiment",
        "debug",
        "hparams_search",
    ):
        assert g in GROUPS and _files(g), g


LOSS_TARGETS = {
    "dice_bce": "medseg.train.losses.DiceBCELoss",
    "dice_ce": "medseg.train.losses.DiceCELoss",
    "sam2": "medseg.train.losses.SAM2Loss",
    "medical_sam2_bce": "medseg.train.losses.DiceBCELoss",  # BCE only: Dice and IoU weights 0, pos_weight 2
}
SCHEDULER_TARGETS = {
    "constant": "medseg.train.optim.warmup_constant",
    "cosine": "medseg.train.optim.warmup_cosine",
    "step": "torch.optim.lr_scheduler.StepLR",
}
OPTIM_TARGETS = {
    "adamw": "torch.optim.AdamW",
    "adamw_layered": "torch.optim.AdamW",
    "sgd": "torch.optim.SGD",
    "medical_sam2_adam": "torch.optim.Adam",
}
META_SIZES = {"t": "tiny", "s": "small", "b+": "base_plus", "l": "large"}  # Meta's published file names


def _overrides_of(group: str, name: str) -> dict[str, str]:
    """``{group: option}`` of the ``- override /group: option`` lines of ``conf/<group>/<name>.yaml``."""
    import yaml

    defaults = (
        yaml.safe_load((CONF / group / f"{name}.yaml").read_text(encoding="utf-8")).get("defaults") or []
    )
    return {
        k.split("/", 1)[1]: v
        for d in defaults
        if isinstance(d, dict)
        for k, v in d.items()
        if k.startswith("override /") and "/" not in k.split("/", 1)[1]
    }


def _assert_composed(group: str, name: str, cfg) -> None:
    """The composed values that matter for ``group=name`` (the option chosen, its target, its defaults)."""
    if group == "model":
        m = cfg.model
        assert m.name == name and m.image_size == 64 and m.checkpoint is None
        if "image_size" in m.net:  # the network is built at the composed size, not the file's default
            assert m.net.image_size == 64
        if m.family == "sam2":
            assert m.net.variant == m.variant and m.variant in VARIANTS
            assert m.task_2d._target_ == "func_2d.task.SAM2ImageTask"
            assert m.task_3d._target_ == "func_3d.task.SAM2VideoTask"
        if "default_checkpoint" in m:
            ckpt = Path(m.default_checkpoint)
            assert ckpt.parent == Path(cfg.paths.checkpoint_dir) and ckpt.suffix in (".pt", ".pth"), ckpt
            if m.family == "sam2" and m.name == m.variant:  # Meta's file for the variant
                prefix, size = m.variant.split("_hiera_")
                assert ckpt.name == f"{prefix}_hiera_{META_SIZES[size]}.pt", ckpt
    elif group == "prompt":
        p = cfg.prompt
        assert p.type == name
        if name == "box":  # training boxes are jittered; the evaluation protocol's are tight
            assert p.jitter_px > 0 and p.jitter_frac > 0
            assert cfg.eval_prompt.jitter_px == 0 and cfg.eval_prompt.jitter_frac == 0
        else:
            assert p.jitter_px == 0 and p.jitter_frac == 0
        assert p.n_pos == (1 if name == "click" else 0)
    elif group == "loss":
        assert cfg.loss._target_ == LOSS_TARGETS[name]
        if name == "medical_sam2_bce":  # Medical-SAM2: BCEWithLogits(pos_weight=2) and nothing else
            assert (cfg.loss.dice_weight, cfg.loss.iou_weight, cfg.loss.pos_weight) == (0, 0, 2)
    elif group == "optim":
        o = cfg.optim
        assert o._target_ == OPTIM_TARGETS[name] and o._partial_ is True and o.lr > 0
        if name == "adamw_layered":  # the image encoder learns slower than the rest
            assert len(o.param_groups) == 1
            g = o.param_groups[0]
            assert g.pattern == "image_encoder.*" and 0 < g.lr < o.lr
        elif name == "medical_sam2_adam":  # Adam, no decay; the memory modules at 1e-8
            assert o.weight_decay == 0 and {g.pattern: g.lr for g in o.param_groups} == {
                "memory_attention.*": 1e-8,
                "memory_encoder.*": 1e-8,
            }
        else:
            assert list(o.param_groups) == []
    elif group == "scheduler":
        assert cfg.scheduler._target_ == SCHEDULER_TARGETS[name] and cfg.scheduler._partial_ is True
    elif group == "trainer":
        t = cfg.trainer
        assert t.monitor == "val/dice" and t.monitor_mode == "max"  # checkpoint_best.pth = best Dice
        assert t.accumulate_grad_batches == 1 and t.gradient_clip_val > 0 and t.resume is None
        if name == "default":
            assert t.device == "auto" and t.amp is True and t.batch_size >= 1
        elif name == "cpu":
            assert t.device == "cpu" and t.amp is False and t.num_workers == 0
        elif name == "high_memory":
            assert t.batch_size == "auto" and {"2d", "3d"} <= set(t.batch_table)
    elif group == "debug":
        t = cfg.trainer
        assert t.device == "cpu" and t.max_epochs == 1 and t.num_workers == 0 and t.amp is False
        assert 0 < t.limit_train_batches <= 2 and 0 < t.limit_val_batches <= 2
    elif group == "paths":
        import os

        assert cfg.paths.checkpoint_dir == os.environ.get("SAM2_CHECKPOINT_DIR", "checkpoints")
    elif group == "hydra":
        callbacks = {c._target_ for c in cfg.hydra.callbacks.values()}
        assert {"medseg.eval.sweep.SweepSummaryCallback", "medseg.run.rundir.RunFolderCallback"} <= callbacks
        assert cfg.hydra.job.chdir is False
    if group in ("experiment", "arm"):  # the file's `override /group: option` lines win over the root's
        for sub, option in _overrides_of(group, name).items():
            node = cfg[sub]
            if sub == "loss":
                assert node._target_ == LOSS_TARGETS[option], (sub, option)
            elif sub == "prompt":
                assert node.type == option, (sub, option)
            elif "name" in node:
                assert node.name == option, (sub, option)
        assert cfg.model.image_size == 64


@pytest.mark.parametrize(("group", "name"), ALL_PARAMS)
def test_config_file_composes_and_instantiates(group, name, data_root, tmp_path):
    root = "train_3d" if (group == "experiment" and name in THREE_D) else "train_2d"
    sel = f"+{group}={name}" if group == "arm" else f"{group}={name}"
    if group in ("hydra", "paths"):
        sel = None
    overrides = [o for o in (sel, "model.image_size=64") if o]
    if group == "experiment":
        overrides.append("model.image_size=64")
    if group == "model":  # random weights: the published files are not downloaded in tests
        overrides.append("model.checkpoint=null")
    cfg = compose_cfg(root, overrides, tmp_path)
    assert OmegaConf.to_yaml(cfg)  # resolves nothing yet, but every interpolation target must exist
    _assert_composed(group, name, cfg)
    if group == "model":
        net = instantiate(cfg.model.net)
        if isinstance(net, torch.nn.Module):
            assert sum(p.numel() for p in net.parameters()) > 0
            assert "task_2d" in cfg.model
    elif group == "dataset":
        extra = {"labels": [1, 2]} if name == "flare22_adrenal" else {}  # the synthetic tree has ids 1, 2
        ds = instantiate(cfg.dataset, root=str(data_root / DATA_FOR[name]), **extra)
        assert len(ds.case_ids) > 0
    elif group == "prompt":
        from medseg.data.prompts import PromptConfig

        assert PromptConfig.from_cfg(cfg.prompt).type == name
    elif group == "loss":
        loss = instantiate(cfg.loss)
        out = loss(torch.randn(2, 1, 8, 8), torch.rand(2, 8, 8) > 0.5)
        assert torch.isfinite(out["loss"])
    elif group in ("optim", "scheduler"):
        from medseg.train.optim import build_optimizer, build_scheduler

        lin = torch.nn.Linear(3, 2)
        opt = build_optimizer(cfg.optim, lin)
        sched = build_scheduler(cfg.scheduler, opt, total_steps=10)
        opt.step()
        sched.step()
        assert opt.param_groups[0]["lr"] > 0
    elif group == "launcher":
        target = cfg.hydra.launcher._target_
        assert ("submitit" in target) if name != "local" else ("BasicLauncher" in target)
        if name != "local":  # requeued / restarted jobs continue from their run folder's checkpoint_last.pth
            assert cfg.trainer.resume == "auto"
    elif group == "logger":
        from medseg.train.loggers import build_loggers

        if name in ("wandb", "mlflow"):
            pytest.importorskip(name, reason=f"{name} is not installed (extra: loggers)")
        OmegaConf.update(cfg, "paths.log_dir", str(tmp_path))  # mlflow's local store
        built = build_loggers(cfg.logger, tmp_path)
        assert len(built.loggers) == (0 if name == "none" else 1)
        built.close()
    elif group == "hparams_search":
        assert "optuna" in cfg.hydra.sweeper._target_.lower()
        assert "optim.lr" in cfg.hydra.sweeper.params and cfg.optimized_metric == "val/dice"
    elif group == "experiment":
        assert cfg.task_name == name


def test_slurm_launcher_writes_a_valid_sbatch_script(tmp_path, monkeypatch):
    """The submitit launcher's settings from conf/launcher/slurm.yaml become the sbatch header
    (no cluster here: a stand-in ``srun`` on PATH lets submitit build its executor)."""
    import os

    import submitit

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/bin/sh\nexit 0\n", encoding="utf-8")
    (fake / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake}{os.pathsep}{os.environ['PATH']}")
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    cfg = compose_cfg(
        "train_3d",
        [
            "launcher=slurm",
            "hydra.launcher.partition=gpu",
            "hydra.launcher.gpus_per_node=2",
            "hydra.launcher.nodes=3",
            "hydra.launcher.timeout_min=90",
            "hydra.launcher.mem_gb=48",
        ],
        tmp_path,
    )
    params = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)  # as the launcher reads them
    params.pop("_target_")
    folder = params.pop("submitit_folder")
    assert "%j" in folder
    ex = submitit.AutoExecutor(folder=str(tmp_path / "sub"), cluster="slurm")
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    ex.update_parameters(
        **{k if k in base else f"slurm_{k}": v for k, v in params.items() if k != "max_num_timeout"}
    )
    text = ex._executor._make_submission_file_text("python train_3d.py", "uid")
    assert "#SBATCH --partition=gpu" in text
    assert "#SBATCH --gpus-per-node=2" in text
    assert "#SBATCH --ntasks-per-node=2" in text  # one DDP process per GPU
    assert "#SBATCH --nodes=3" in text
    assert "#SBATCH --time=90" in text
    assert "#SBATCH --mem=48GB" in text


def test_train_slurm_script_maps_models(tmp_path):
    r = subprocess.run(
        ["bash", "train_slurm.sh", "nonsense"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    assert r.returncode == 2 and "unknown model 'nonsense'" in r.stderr
    text = (ROOT / "train_slurm.sh").read_text(encoding="utf-8")
    assert "#SBATCH --gres=gpu:1" in text and "apptainer exec --nv" in text and "train_2d.py" in text


@pytest.mark.slow  # 15 s; the multirun sweep-summary test in test_sweep.py stays in make test
def test_multirun_two_variants_writes_runs_and_sweep_summary(data_root, tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli(
        "train_3d.py",
        "-m",
        "model=sam2.1_hiera_t,sam2_hiera_t",
        f"dataset.root={data_root / 'nnunet'}",
        *CLI_SMALL,
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=1",
        "trainer.limit_val_batches=1",
        "trainer.batch_size=1",
        "func_3d.video_length=3",
        "trainer.progress_bar=false",
        f"hydra.sweep.dir={sweep}",
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    runs = sorted(p for p in sweep.iterdir() if (p / "checkpoint_last.pth").exists())
    assert len(runs) == 2
    rows = read_csv(sweep / "sweep_summary.csv")
    assert sorted(r["model"] for r in rows) == ["sam2.1_hiera_t", "sam2_hiera_t"]
    assert (sweep / "sweep_summary.md").read_text(encoding="utf-8").count("sam2") >= 2
    assert (sweep / "sweep_summary.png").stat().st_size > 1000


def test_entry_point_returns_monitored_metric_for_sweepers(data_root, tmp_path):
    from tests.conftest import run_entry

    _, value = run_entry(
        "train_2d", [f"dataset.root={data_root / 'kvasir'}", "optimized_metric=val/dice"], tmp_path / "r"
    )
    assert isinstance(value, float) and 0.0 <= value <= 1.0


@pytest.mark.parametrize("root,mode", [("train_3d", "3d"), ("train_2d", "2d")])
def test_high_memory_batch_follows_hiera_size_and_image_size(root, mode, tmp_path):
    from medseg.train.runtime import resolve_batch_size

    def batch(*overrides):
        return resolve_batch_size(compose_cfg(root, ["trainer=high_memory", *overrides], tmp_path), mode)

    table = compose_cfg(root, ["trainer=high_memory"], tmp_path).trainer.batch_table[mode]
    for size in ("t", "s", "b+", "l"):
        for px in (512, 1024):
            assert batch(f"model=sam2.1_hiera_{size}", f"model.image_size={px}") == table[f"{size}@{px}"]
        # bigger images never get a bigger batch; a bigger model never gets a bigger batch
        assert table[f"{size}@1024"] <= table[f"{size}@512"]
    for px in (512, 1024):
        assert [table[f"{k}@{px}"] for k in ("t", "s", "b+", "l")] == sorted(
            [table[f"{k}@{px}"] for k in ("t", "s", "b+", "l")], reverse=True
        )
    assert batch("model=sam2_hiera_l", "model.image_size=768") == table["l@1024"]  # next larger entry
    assert batch("model=sam2.1_hiera_t", "model.image_size=256") == table["t@512"]
    assert batch("model=medsam2") == table["t@512"]  # MedSAM2 is Hiera-T at 512
    assert batch("model=unet") == compose_cfg(root, ["trainer=high_memory"], tmp_path).trainer.batch_fallback
    assert batch("trainer.batch_size=3") == 3


@pytest.mark.parametrize("bad", ["0", "many"])
def test_bad_batch_size_is_one_clear_error(bad, tmp_path):
    from medseg.train.runtime import resolve_batch_size

    cfg = compose_cfg("train_3d", [f"trainer.batch_size={bad}"], tmp_path)
    with pytest.raises(ValueError, match=r"trainer.batch_size: expected a positive integer or auto"):
        resolve_batch_size(cfg, "3d")
