"""Tasks receive their settings and their own options, never the whole config; nothing writes back into
the config (issue 16, deliverable 3)."""

from __future__ import annotations

import inspect
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from medseg.run.app import build_task
from medseg.train.task_settings import TaskSettings
from tests.conftest import CONF, SMALL, compose_cfg

MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml"))
CTX_2D = SimpleNamespace(train_samples=None, collate=None, label_names={0: "bg", 1: "object"})
CTX_3D = SimpleNamespace(train_cases=None, train_transform=None, label_names={0: "bg", 1: "organ"})


@pytest.mark.parametrize("model", MODELS)
def test_every_task_gets_settings_and_its_own_options_not_the_config(model, tmp_path):
    cfg = compose_cfg("train_2d", [*SMALL, f"model={model}", "func_2d.threshold=0.25"], tmp_path)
    entries = [("task_2d", CTX_2D, cfg)]
    if "task_3d" in cfg.model:
        cfg3 = compose_cfg("train_3d", [*SMALL, f"model={model}", "func_3d.video_length=3"], tmp_path / "3d")
        entries.append(("task_3d", CTX_3D, cfg3))
    for key, ctx, c in entries:
        task = build_task(c, ctx, key)
        params = inspect.signature(type(task).__init__).parameters
        assert "cfg" not in params and not hasattr(task, "cfg"), f"{model}.{key} still takes the config"
        assert isinstance(task.settings, TaskSettings)
        assert task.settings.protocol.prompt == TaskSettings.from_cfg(c).protocol.prompt
        group = "func_2d" if key == "task_2d" else "func_3d"
        if "options" in params:  # SAM2 / SAM families read their group, bound in the model yaml
            assert OmegaConf.to_container(task.options) == OmegaConf.to_container(c[group])
    if "options" in inspect.signature(type(build_task(cfg, CTX_2D, "task_2d")).__init__).parameters:
        assert build_task(cfg, CTX_2D, "task_2d").parts.threshold == 0.25


def test_settings_carry_the_values_tasks_read(tmp_path):
    over = [
        *SMALL,
        "trainer.limit_val_batches=3",
        "vis_max_cases=1",
        "train=false",
        "trainer.activation_checkpointing=true",
        "prompt=click",
        "eval_prompt.seed=7",
        "loss=dice_ce",
    ]
    s = TaskSettings.from_cfg(compose_cfg("train_2d", over, tmp_path))
    assert (s.limit_val_batches, s.vis_max_cases, s.train, s.activation_checkpointing) == (3, 1, False, True)
    assert s.prompt.type == "click" and s.protocol.seed == 7 and s.batch_size == 2
    assert type(s.loss_fn).__name__ == "DiceCELoss" and s.model_name.startswith("sam2")


def test_a_user_model_yaml_without_options_gets_one_clear_line(tmp_path):
    from func_2d.task import SAM2ImageTask

    cfg = compose_cfg("train_2d", SMALL, tmp_path)
    with pytest.raises(ValueError, match=r"model.task_2d.options: missing"):
        SAM2ImageTask(CTX_2D, TaskSettings.from_cfg(cfg), None)


def test_batch_size_auto_is_resolved_into_a_copy_not_the_users_config(data_root, tmp_path, monkeypatch):
    """The run uses the table's batch; the config object the caller passed is left as it was."""
    from medseg.run import app

    cfg = compose_cfg(
        "train_2d",
        [*SMALL, "trainer.batch_size=auto", "model=unet", f"dataset.root={Path(data_root) / 'kvasir'}"],
        tmp_path,
    )
    seen = {}

    def fake_setup(c):  # stop the run after the batch size is decided
        seen["batch"] = c.trainer.batch_size
        raise KeyboardInterrupt

    monkeypatch.setattr(app, "setup_runtime", fake_setup)
    with pytest.raises(KeyboardInterrupt):
        app.run(cfg, mode="2d", task_key="task_2d")
    assert str(cfg.trainer.batch_size) == "auto" and isinstance(seen["batch"], int)


@pytest.mark.parametrize("model", MODELS)
def test_every_task_meets_the_engine_contract(model, tmp_path):
    """Each family's task is a :class:`Task`; only YOLO hands training to its library (ExternalTrainer)."""
    from medseg.train.contract import ExternalTrainer, Task

    task = build_task(compose_cfg("train_2d", [*SMALL, f"model={model}"], tmp_path), CTX_2D, "task_2d")
    assert isinstance(task, ExternalTrainer) == (model == "yolo_seg")
    assert isinstance(task, Task) or isinstance(task, ExternalTrainer)
