"""Issue 13, run folders and weights files: nothing lost, nothing executed.

Run folders are append-only (a finished run, a live lock, an inference output folder, a sweep folder,
a splits.json drawn with other settings, a resume with another image size: refused, the earlier files
byte-for-byte unchanged) and no file passed by a user runs code (pickles with code refused everywhere
weights are read). Each fault gives one clear line; one real command line proves Hydra writes nothing
before the refusal. Data and config faults: ``test_reliability_inputs.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from medseg.run.rundir import RunFolderCallback
from medseg.train.run_folder import LOCK_NAME
from tests.conftest import ROOT, SMALL, compose_cfg, run_cli, run_entry
from tests.fault_helpers import (
    callback_exit,
    evil_pickle,
    finished_run,
    inference_cfg,
    meta_ckpt,
    one_line_exit,
    snapshot,
)


# ---------------------------------------------------------------- run folders are append-only
def test_cli_second_run_into_finished_folder_is_refused_and_touches_nothing(kvasir, tmp_path):
    """(a) a finished run is never replaced; (b) a start that would fail (another dataset) does not rewrite
    its .hydra/config.yaml either: Hydra writes nothing before the refusal."""
    run = tmp_path / "run"
    before = finished_run(run)
    r = run_cli(
        "train_2d.py",
        f"dataset.root={tmp_path / 'no_such_dataset'}",
        "model.checkpoint=null",
        "trainer.device=cpu",
        f"hydra.run.dir={run}",
    )
    assert r.returncode == 2
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(run) in err[0] and "trainer.resume=" in err[0] and "hydra.run.dir" in err[0]
    assert snapshot(run) == before  # byte for byte, .hydra/ included; no log, no lock left


def test_overwrite_and_resume_are_the_exceptions(tmp_path):
    run = tmp_path / "run"
    finished_run(run)
    for extra in (["overwrite=true"], [f"trainer.resume={run / 'checkpoint_last.pth'}"]):
        cfg = compose_cfg("train_2d", [*SMALL, *extra], run)
        cb = RunFolderCallback()
        cb.on_run_start(config=cfg)
        assert (run / LOCK_NAME).is_file()
        cb.on_run_end(config=cfg)
        assert not (run / LOCK_NAME).exists()
    # a resumed run keeps the folder's .hydra/ and writes its own config beside it
    assert cfg.hydra.output_subdir.startswith(".hydra/resume_")


def test_live_lock_refuses_and_stale_lock_is_taken_over(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    import socket

    live = {"pid": os.getpid(), "host": socket.gethostname(), "started": "now"}
    (run / LOCK_NAME).write_text(json.dumps(live), encoding="utf-8")
    cfg = compose_cfg("train_2d", [*SMALL, "overwrite=true"], run)
    line = callback_exit(cfg, capsys)
    assert str(run) in line and "in progress" in line and str(os.getpid()) in line
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / LOCK_NAME).write_text(json.dumps({**live, "pid": dead.pid}), encoding="utf-8")
    cb = RunFolderCallback()
    cb.on_run_start(config=cfg)  # the dead process's lock is stale: taken over
    assert json.loads((run / LOCK_NAME).read_text(encoding="utf-8"))["pid"] == os.getpid()
    cb.on_run_end(config=cfg)


def test_run_dir_under_a_regular_file_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me", encoding="utf-8")
    line = callback_exit(compose_cfg("train_2d", SMALL, blocker / "run"), capsys)
    assert "hydra.run.dir" in line and str(blocker) in line and "is a file" in line
    assert blocker.read_text(encoding="utf-8") == "keep me"


def test_inference_into_used_output_dir_keeps_its_metrics(tmp_path, nnunet, capsys):
    """(c) another split into the same output_dir: refused, metrics.csv of the first one unchanged."""
    from func_3d.inference import run_inference

    preds = tmp_path / "preds"
    preds.mkdir()
    (preds / "metrics.csv").write_text(
        "case_id,dice\ncase_000,0.9\n", encoding="utf-8"
    )  # an earlier run on another split
    before = snapshot(preds)
    cfg = inference_cfg(tmp_path, nnunet, meta_ckpt(tmp_path), preds)
    line = one_line_exit(lambda: run_inference(cfg), capsys)
    assert str(preds) in line and "overwrite=true" in line
    assert snapshot(preds) == before


def test_changed_split_with_existing_splits_json_is_refused(tmp_path, kvasir, capsys):
    """(d) resuming in a folder whose splits.json was drawn with other split settings."""
    from medseg.run.context import prepare_data

    run = tmp_path / "run"
    first = compose_cfg("train_2d", [*SMALL, f"dataset.root={kvasir}"], run)
    prepare_data(first, run, mode="2d")
    (run / ".hydra").mkdir()
    OmegaConf.save(OmegaConf.masked_copy(first, ["dataset", "seed"]), run / ".hydra" / "config.yaml")
    before = snapshot(run)
    changed = compose_cfg("train_2d", [*SMALL, f"dataset.root={kvasir}", "dataset.split.val_ratio=0.5"], run)
    line = one_line_exit(lambda: prepare_data(changed, run, mode="2d"), capsys)
    assert "dataset.split.val_ratio: 0.5 differs from 0.1" in line and str(run / "splits.json") in line
    assert snapshot(run) == before
    prepare_data(first, run, mode="2d")  # the same settings continue


def test_resume_with_another_image_size_is_refused(kvasir, tmp_path, capsys):
    run = tmp_path / "run"
    run_entry("train_2d", [f"dataset.root={kvasir}", "trainer.limit_train_batches=1"], run)
    before = snapshot(run)
    ckpt = run / "checkpoint_last.pth"
    from medseg.run.app import run as app_run

    cfg = compose_cfg(
        "train_2d", [*SMALL, f"dataset.root={kvasir}", f"trainer.resume={ckpt}", "model.image_size=96"], run
    )
    line = one_line_exit(lambda: app_run(cfg, mode="2d", task_key="task_2d"), capsys)
    assert str(ckpt) in line and "model.image_size=96" in line and "model.image_size=64" in line
    assert snapshot(run) == before


def test_compare_out_naming_a_file_is_one_line(tmp_path, capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("compare_tool", ROOT / "tools" / "compare.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "report.md"
    out.write_text("mine", encoding="utf-8")
    (tmp_path / "runA").mkdir()
    capsys.readouterr()
    assert tool.main([str(tmp_path / "runA"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(out) in err and "Traceback" not in err
    assert out.read_text(encoding="utf-8") == "mine"


def test_sweep_into_a_used_sweep_dir_is_refused(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    before = finished_run(sweep / "0_model=unet")
    cfg = compose_cfg("train_2d", [*SMALL, f"hydra.sweep.dir={sweep}"], tmp_path / "unused")
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        RunFolderCallback().on_multirun_start(config=cfg)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(sweep) in err and "hydra.sweep.dir" in err and "Traceback" not in err
    assert snapshot(sweep / "0_model=unet") == before


# ---------------------------------------------------------------- no file passed by a user runs code
def _yolo_cli_refusal(tmp_path, kvasir, key: str, weights, marker) -> str:
    """``train_2d.py model=yolo_seg <key>=<weights>``: exit 2, one line naming the file, no code run, no
    checkpoint; returns that line."""
    r = run_cli(
        "train_2d.py",
        "model=yolo_seg",
        f"{key}={weights}",
        f"dataset.root={kvasir}",
        "trainer.device=cpu",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert r.returncode == 2, r.stderr[-2000:]
    err = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("[")]
    assert len(err) == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(weights) in err[0], err
    assert not marker.exists()
    assert not (tmp_path / "run" / "checkpoint_last.pth").exists()
    return err[0]


@pytest.mark.slow  # 11 s; the in-process code-pickle test and the CLI gadget tests stay in make test
def test_cli_yolo_weights_with_code_are_refused(kvasir, tmp_path):
    pytest.importorskip("ultralytics")
    marker = tmp_path / "PWNED"
    weights = evil_pickle(tmp_path / "evil.pt", marker)
    line = _yolo_cli_refusal(tmp_path, kvasir, "model.net.weights", weights, marker)
    assert "refused" in line and "posix.system" in line


def test_real_yolo_weights_pass_the_check(tmp_path):
    pytest.importorskip("ultralytics")
    from traditional_models.yolo import _yolo, check_yolo_weights

    path = tmp_path / "yolo.pt"
    _yolo("yolo11n-seg.yaml").save(str(path))
    assert check_yolo_weights(path) == path


def yolo_gadget(tmp_path, marker, target: str = "autobackend"):
    """A ``.pt`` naming only an ultralytics class, called (pickle REDUCE) on a second file whose code
    touches ``marker``: ``AutoBackend(second.pt)`` unpickles it with ``weights_only=False``;
    ``SegmentationModel(cfg)`` is a model container's constructor (it reads a yaml, builds layers)."""
    import torch

    second = evil_pickle(tmp_path / "second.pt", marker)
    if target == "autobackend":
        from ultralytics.nn.autobackend import AutoBackend as call
    else:
        from ultralytics.nn.tasks import SegmentationModel as call

    class Gadget:
        def __reduce__(self):
            return (call, (str(second),))

    path = tmp_path / "gadget.pt"
    torch.save({"model": Gadget(), "train_args": {}}, path)
    return path


def test_official_style_yolo_weights_with_a_bound_forward_pass_the_check(tmp_path):
    """Official YOLO11/YOLOv8 segment checkpoints pickle ``Detect.forward`` as ``getattr(head, "forward")``;
    that attribute lookup is allowed, any other (``__class__``, ``__init__``, ...) is refused."""
    pytest.importorskip("ultralytics")
    import torch

    from traditional_models.yolo import _yolo, check_yolo_weights

    yolo = _yolo("yolo11n-seg.yaml")
    head = yolo.model.model[-1]
    head.detect = head.forward  # a bound method: pickled as builtins.getattr(head, "forward")
    path = tmp_path / "official.pt"
    yolo.save(str(path))
    assert "builtins.getattr" in torch.serialization.get_unsafe_globals_in_checkpoint(path)
    assert check_yolo_weights(path) == path
    assert _yolo(path).model.model[-1].detect.__name__ == "forward"  # and ultralytics loads it

    class Lookup:
        def __reduce__(self):
            return (getattr, (head, "__init__"))

    bad = tmp_path / "lookup.pt"
    torch.save({"model": yolo.model, "x": Lookup()}, bad)
    with pytest.raises(ValueError, match=r"lookup\.pt: refused: .*getattr\(Segment, '__init__'\)"):
        check_yolo_weights(bad)


@pytest.mark.parametrize("key", ["model.net.weights", "model.checkpoint"])
def test_cli_yolo_gadget_calling_an_ultralytics_class_is_refused(key, kvasir, tmp_path):
    pytest.importorskip("ultralytics")
    marker = tmp_path / "PWNED"
    weights = yolo_gadget(tmp_path, marker)
    line = _yolo_cli_refusal(tmp_path, kvasir, key, weights, marker)
    assert key in line and "AutoBackend" in line, line


@pytest.mark.parametrize("target", ["autobackend", "container"])
@pytest.mark.parametrize("key", ["model.net.weights", "model.checkpoint"])
def test_yolo_weights_never_call_a_class(key, target, tmp_path, capsys):
    """Neither a class outside the allow-list nor an allowed model class may be called by the file:
    modules are rebuilt only as torch.save writes them (``cls.__new__`` + ``__setstate__``)."""
    pytest.importorskip("ultralytics")
    from traditional_models.yolo import YoloSeg

    marker = tmp_path / "PWNED"
    path = yolo_gadget(tmp_path, marker, target)
    if key == "model.net.weights":
        line = one_line_exit(lambda: YoloSeg(weights=str(path)), capsys)
    else:
        line = one_line_exit(lambda: YoloSeg().use_checkpoint(path), capsys)
    assert str(path) in line and key in line and "refused" in line, line
    assert ("AutoBackend" if target == "autobackend" else "SegmentationModel") in line, line
    assert not marker.exists()


@pytest.mark.parametrize("where", ["model.checkpoint", "trainer.resume", "encoder_weights"])
def test_code_pickles_are_refused_everywhere(where, tmp_path, capsys):
    from medseg.train.checkpoint import read_checkpoint
    from medseg.train.segmenter import load_resnet_weights

    marker = tmp_path / "PWNED"
    path = evil_pickle(tmp_path / "evil.pth", marker)
    if where == "encoder_weights":
        import torchvision

        line = one_line_exit(lambda: load_resnet_weights(torchvision.models.resnet18(), path), capsys)
    else:  # SAM2 weights and resume both open the file with read_checkpoint
        line = one_line_exit(lambda: read_checkpoint(path), capsys)
    assert str(path) in line
    assert not marker.exists()


@pytest.mark.parametrize("text", ["hello world\n", "abc", "model: sam2\nlr: 1\n"])
def test_text_file_as_checkpoint_is_one_line_naming_it(text, tmp_path, capsys):
    from sam2_train import build_sam2_model

    path = tmp_path / "notes.txt"
    path.write_text(text, encoding="utf-8")
    line = one_line_exit(
        lambda: build_sam2_model("sam2.1_hiera_t", image_size=64, checkpoint=str(path)), capsys
    )
    assert str(path) in line and "not a PyTorch weights file" in line
