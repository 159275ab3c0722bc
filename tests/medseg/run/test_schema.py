"""One home for every option's type and default (issue 22, item 3): the schemas of medseg/schema.py.

Unknown keys, wrong types and out-of-range values are refused as one line while the config is composed
(before the run folder exists); the yaml presets only say what differs from the schema.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from medseg.data.prompts import PromptConfig
from medseg.schema import TrainConfig, TrainerConfig
from tests.conftest import CONF, SMALL, compose_cfg, run_cli
from tests.fault_helpers import composed_exit


@pytest.mark.parametrize(
    "root, override, names",
    [
        ("train_2d", "+optimm=sgd", ["optimm", "did you mean 'optim'"]),
        ("train_2d", "trainer.max_epoch=3", ["max_epoch", "did you mean max_epochs"]),
        ("train_2d", "+trainer.max_epoch=3", ["trainer.max_epoch", "trainer.max_epochs"]),
        ("train_3d", "trainer.max_epochs=abc", ["trainer.max_epochs: expected an integer >= 1", "'abc'"]),
        ("train_3d", "+func_3d.video_lenght=4", ["func_3d.video_lenght", "func_3d.video_length"]),
        ("train_2d", "+eval_prompt.jiter_px=2", ["eval_prompt.jiter_px"]),
        ("inference_3d", "split=tset", ["split: expected one of train, val, test, all", "'tset'"]),
        ("inference_2d", "threshold=high", ["threshold: expected a number", "'high'"]),
    ],
)
def test_unknown_key_or_wrong_type_is_one_line_before_the_run_folder(root, override, names, tmp_path, capsys):
    run = tmp_path / "run"
    extra = {"inference_3d": ["checkpoint=x.pth"], "inference_2d": ["checkpoint=x.pth", "input_dir=y"]}
    line = composed_exit(
        root, [*(SMALL if root.startswith("train") else []), *extra.get(root, []), override], run, capsys
    )
    for n in names:
        assert n in line, (n, line)
    assert not run.exists()


def test_the_command_line_refuses_a_trainer_typo_in_one_line(tmp_path):
    r = run_cli("train_2d.py", "trainer.max_epoch=3", f"hydra.run.dir={tmp_path / 'run'}")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "max_epoch" in lines[0] and "max_epochs" in lines[0], (
        r.stderr
    )
    assert not (tmp_path / "run").exists()


def test_composed_groups_are_typed_by_their_schema():
    cfg = compose_cfg("train_3d", [], Path("/tmp/unused"))
    assert OmegaConf.get_type(cfg) is TrainConfig
    assert OmegaConf.get_type(cfg.trainer) is TrainerConfig and OmegaConf.get_type(cfg.prompt) is PromptConfig
    # every default of the trainer comes from the schema: the composed node equals a fresh TrainerConfig
    assert OmegaConf.to_container(cfg.trainer) == OmegaConf.to_container(OmegaConf.structured(TrainerConfig))


def _raw_values(path: Path) -> dict:
    raw = OmegaConf.to_container(OmegaConf.load(path))
    raw.pop("defaults", None)
    return raw


GROUPS = ["trainer", "prompt", "optim", "scheduler"]


@pytest.mark.parametrize(
    "yaml_file",
    [p for g in GROUPS for p in sorted((CONF / g).glob("*.yaml"))]
    + [CONF / f"{r}.yaml" for r in ("train_2d", "train_3d", "inference_2d", "inference_3d")],
    ids=lambda p: str(p.relative_to(CONF)),
)
def test_presets_say_only_what_differs_from_the_schema(yaml_file):
    """A yaml value equal to its schema's default is a second home for that default: refused."""
    group = yaml_file.parent.name if yaml_file.parent != CONF else None
    root = yaml_file.stem if group is None else "train_2d"
    extra = {"inference_3d": ["checkpoint=x"], "inference_2d": ["checkpoint=x", "input_dir=y"]}.get(root, [])
    cfg = compose_cfg(root, [*extra, *([f"{group}={yaml_file.stem}"] if group else [])], Path("/tmp/unused"))
    node = cfg[group] if group else cfg
    schema = OmegaConf.get_type(node)
    assert dataclasses.is_dataclass(schema), f"{yaml_file.name}: not typed by a schema"
    defaults = OmegaConf.structured(schema)
    repeated = [
        k
        for k, v in _raw_values(yaml_file).items()
        if k in defaults and not OmegaConf.is_config(defaults[k]) and defaults[k] == v
    ]
    assert not repeated, f"{yaml_file.relative_to(CONF)} restates the schema's default of {repeated}"


def test_the_3d_protocol_uses_the_func_3d_threshold(tmp_path):
    """Both func_2d and func_3d exist in every training root now: the 3D task's protocol reads func_3d."""
    from medseg.train.task_settings import TaskSettings

    cfg = compose_cfg("train_3d", [*SMALL, "func_3d.threshold=0.3", "func_2d.threshold=-0.2"], tmp_path)
    assert TaskSettings.from_cfg(cfg, "3d").protocol.threshold == pytest.approx(0.3)
    assert TaskSettings.from_cfg(cfg, "2d").protocol.threshold == pytest.approx(-0.2)


def test_a_checkpoint_saved_before_the_schemas_resumes_unless_a_setting_changed(tmp_path):
    """A key an older checkpoint's config lacks (train_3d had no func_2d, the trainer no batch_table) had
    its schema default: not a change. A real change is still refused."""
    from medseg.train.resume_policy import check_resume_settings

    cfg = compose_cfg("train_3d", SMALL, tmp_path)
    saved = OmegaConf.to_container(cfg, resolve=False)
    saved.pop("func_2d")
    for key in ("batch_table", "batch_fallback"):
        saved["trainer"].pop(key)
    assert check_resume_settings(saved, cfg, "old.pth") == []
    saved["seed"] = 7
    with pytest.raises(ValueError, match="seed changed 7 -> 42"):
        check_resume_settings(saved, cfg, "old.pth")


@pytest.mark.parametrize(
    "optim, want", [("adamw_layered", (5e-6, 0.01, 5e-5)), ("medical_sam2_adam", (1e-8, 0.0, 1e-4))]
)
def test_param_groups_of_the_presets_build_an_optimizer(optim, want, tmp_path):
    """The schema writes a group's unset lr / weight_decay as null: the group takes the optimizer's."""
    import torch

    from medseg.train.optim import build_optimizer

    net = torch.nn.Module()
    for name in ("image_encoder", "memory_attention", "head"):
        setattr(net, name, torch.nn.Linear(2, 2))
    cfg = compose_cfg("train_2d", [*SMALL, f"optim={optim}"], tmp_path)
    groups = {g["name"]: g for g in build_optimizer(cfg.optim, net).param_groups}
    first = groups["image_encoder.*"] if "image_encoder.*" in groups else groups["memory_attention.*"]
    assert (first["lr"], first["weight_decay"], groups["default"]["lr"]) == pytest.approx(want)
