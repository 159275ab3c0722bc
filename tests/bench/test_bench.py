"""bench/ package: the page re-renders from results.json alone, the CLI rejects unknown names, and the
steps it times still build from the real configs (bench 2d/mfu/per_size failed once a task needed
``label_names`` and no test ran the bench code)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ROOT


def test_render_reproduces_the_committed_page():
    """docs/BENCHMARKS.md is generated: rendering bench/results.json gives it byte for byte."""
    from bench.report import render

    results = json.loads((ROOT / "bench" / "results.json").read_text(encoding="utf-8"))
    assert render(results) == (ROOT / "docs" / "BENCHMARKS.md").read_text(encoding="utf-8")


def test_render_only_writes_the_page_without_measuring(tmp_path):
    from bench.run import main

    doc = tmp_path / "page.md"
    (tmp_path / "r.json").write_text(json.dumps({"device": {"type": "cpu"}, "commands": ["cd x"]}))
    assert main(["--render-only", "--results", str(tmp_path / "r.json"), "--doc", str(doc)]) == 0
    text = doc.read_text(encoding="utf-8")
    assert text.startswith("# Benchmarks") and "cd x" in text and "not measured" in text


def test_unknown_section_and_child_kind_are_refused(capsys):
    from bench.run import parse_args, run_child

    with pytest.raises(SystemExit):
        parse_args(["--skip", "2d,inferense"])
    assert "inferense" in capsys.readouterr().err
    assert parse_args(["--skip", "2d,mfu"]).skip == {"2d", "mfu"}
    with pytest.raises(ValueError, match="nope"):
        run_child({"kind": "nope", "threads": 1, "device": "cpu"})


def test_timed_tasks_build_from_the_real_configs(tmp_path):
    """The tasks bench/steps.py times, from the composed train_2d / train_3d configs."""
    from bench.steps import image_task, video_task
    from bench.workloads import base_overrides, compose

    cfg2 = compose("train_2d", base_overrides(64, "cpu"), tmp_path / "2d")
    assert image_task(cfg2).classes == [1]
    cfg3 = compose("train_3d", base_overrides(64, "cpu"), tmp_path / "3d")
    task = video_task(cfg3, batch_clips=False, checkpointing=True)
    assert (task.batch_clips, task.checkpointing) == (False, True)


def test_activation_count_patches_every_checkpoint_caller():
    """bench/activations.py counts the inputs that checkpointed regions keep by wrapping
    ``torch.utils.checkpoint.checkpoint`` where the 3D propagation and the image encoder call it; it
    used to name ``func_3d.propagate`` and broke when the propagation moved to another module."""
    import torch

    from bench.activations import checkpoint_callers, saved_bytes

    callers = checkpoint_callers()
    assert {m.__name__.split(".")[0] for m in callers} == {"func_3d", "sam2_train"}
    model = torch.nn.Linear(4, 4)
    x = torch.randn(8, 4)
    assert saved_bytes(lambda: model(x).sum(), model) == x.numel() * 4  # the input kept for the weight grad
    assert all(m.checkpoint is torch.utils.checkpoint.checkpoint for m in callers)  # restored
