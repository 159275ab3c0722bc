"""Issue 20 (defects 2, 3, 4, 9): resume never loses results, inference never scores training cases as
validation, a resume with changed settings is refused or applied and recorded (one table, tested per row),
and a start that is refused or fails before its first step leaves the run folder as it found it."""

from __future__ import annotations

import json
import logging
import shutil
import sys

import pytest
import torch
from omegaconf import OmegaConf

from medseg.run.rundir import RunFolderCallback
from medseg.train.run_folder import LOCK_NAME
from tests.conftest import SMALL, compose_cfg, run_entry
from tests.fault_helpers import callback_exit, finished_run, one_line_exit, snapshot


def _cfg(run, *extra):
    return compose_cfg("train_2d", [*SMALL, "dataset.root=/no/data/needed", *extra], run)


def _passes_callback(cfg) -> None:
    cb = RunFolderCallback()
    cb.on_run_start(config=cfg)
    cb.on_run_end(config=cfg)


# ---------------------------------------------------------------- 2: resume=auto never starts over results
def test_resume_auto_in_finished_folder_without_checkpoint_last_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    finished_run(run)
    (run / "checkpoint_last.pth").unlink()
    torch.save({"model": {"w": torch.ones(2)}}, run / "checkpoint_best.pth")
    before = snapshot(run)
    line = callback_exit(_cfg(run, "trainer.resume=auto"), capsys)
    assert str(run) in line and "no checkpoint_last.pth" in line and "metrics.csv" in line, line
    assert "hydra.run.dir" in line and "overwrite=true" in line, line
    assert f"trainer.resume={run}" not in line  # never a hint to resume from a file that does not exist
    assert snapshot(run) == before


def test_resume_auto_in_finished_folder_refused_by_the_engine_too(tmp_path, capsys):
    """Without the Hydra callback (the engine's own guard): nothing replaced."""
    from medseg.train.run_outputs import RunOutputs

    run = tmp_path / "run"
    finished_run(run)
    (run / "checkpoint_last.pth").unlink()
    before = snapshot(run)
    from medseg.schema import TrainerConfig
    from medseg.train.contract import RunSpec

    outputs = RunOutputs()
    outputs.out_dir, outputs.t, outputs.run = run, TrainerConfig(resume="auto"), RunSpec()
    line = one_line_exit(outputs._resume_path, capsys)
    assert str(run) in line and "no checkpoint_last.pth" in line
    assert snapshot(run) == before


def test_resume_auto_in_new_empty_or_never_checkpointed_folder_starts_fresh(tmp_path):
    """SLURM requeue: the first start of a job (folder missing or empty, or killed before any result)."""
    new, empty, killed = tmp_path / "new", tmp_path / "empty", tmp_path / "killed"
    empty.mkdir()
    killed.mkdir()
    (killed / "splits.json").write_text('{"train": [], "val": [], "test": []}', encoding="utf-8")
    for run in (new, empty, killed):
        _passes_callback(_cfg(run, "trainer.resume=auto"))
        assert not (run / LOCK_NAME).exists()


# ---------------------------------------------------------------- 9: refused before the first byte
@pytest.mark.parametrize("name, module", [("wandb", "wandb"), ("mlflow", "mlflow")])
def test_missing_logger_package_is_refused_before_anything_is_written(
    name, module, tmp_path, capsys, monkeypatch
):
    monkeypatch.setitem(sys.modules, module, None)  # as without the optional extra: import fails
    run = tmp_path / "run"
    line = callback_exit(_cfg(run, f"logger={name}"), capsys)
    assert f"logger={name}" in line and "pip install" in line, line
    assert not run.exists()


@pytest.mark.parametrize("kind", ["missing", "text", "weights_only"])
def test_bad_resume_file_is_refused_before_anything_is_written(kind, tmp_path, capsys):
    bad = tmp_path / "ck" / "checkpoint_last.pth"
    bad.parent.mkdir()
    if kind == "text":
        bad.write_text("not a checkpoint\n", encoding="utf-8")
    elif kind == "weights_only":
        torch.save({"format": "sam2-medical/1", "model": {"w": torch.ones(1)}}, bad)
    run = tmp_path / "run"
    line = callback_exit(_cfg(run, f"trainer.resume={bad}"), capsys)
    assert str(bad) in line, line
    assert not run.exists()


def test_resume_file_that_does_not_exist_in_the_folder_is_refused_without_a_resume_hint(tmp_path, capsys):
    run = tmp_path / "run"
    finished_run(run)
    (run / "checkpoint_last.pth").unlink()
    before = snapshot(run)
    line = callback_exit(_cfg(run, f"trainer.resume={run / 'checkpoint_last.pth'}"), capsys)
    assert str(run / "checkpoint_last.pth") in line and "not found" in line, line
    assert snapshot(run) == before


def test_refusal_hint_never_names_a_missing_checkpoint_last(tmp_path, capsys):
    """A folder left by a start that failed (splits.json, .hydra/): no hint to resume from nothing."""
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text("seed: 1\n", encoding="utf-8")
    (run / "splits.json").write_text('{"train": ["a"], "val": [], "test": []}', encoding="utf-8")
    before = snapshot(run)
    line = callback_exit(_cfg(run), capsys)
    assert str(run) in line and "hydra.run.dir" in line and "trainer.resume" not in line, line
    assert snapshot(run) == before
    finished_run(tmp_path / "done")  # a folder with checkpoint_last.pth still gets the hint
    line = callback_exit(_cfg(tmp_path / "done"), capsys)
    assert f"trainer.resume={tmp_path / 'done' / 'checkpoint_last.pth'}" in line


def test_start_that_fails_before_step_one_leaves_the_folder_as_found(kvasir, tmp_path, capsys, monkeypatch):
    """A late failure (here: the task cannot be built, after splits.json was written) removes what this
    start created (.hydra/, log, splits.json, lock): the corrected command then runs in the same folder."""
    import medseg.run.app as app

    for run, existed in ((tmp_path / "new", False), (tmp_path / "old", True)):
        if existed:
            run.mkdir()
            (run / "notes.txt").write_text("mine", encoding="utf-8")
        before = snapshot(run) if existed else None
        cfg = compose_cfg("train_2d", [*SMALL, f"dataset.root={kvasir}"], run)
        cb = RunFolderCallback()
        cb.on_run_start(config=cfg)
        (run / ".hydra").mkdir()  # what Hydra writes after the callback
        (run / ".hydra" / "config.yaml").write_text("seed: 42\n", encoding="utf-8")
        (run / "train_2d.log").write_text("[INFO] started\n", encoding="utf-8")

        def boom(*a, **k):
            raise ValueError("task: cannot be built (a late failure)")

        monkeypatch.setattr(app, "build_task", boom)
        line = one_line_exit(lambda cfg=cfg: app.run(cfg, mode="2d", task_key="task_2d"), capsys)
        assert "cannot be built" in line
        cb.on_run_end(config=cfg)
        if existed:
            assert snapshot(run) == before
        else:
            assert not run.exists() or not any(run.iterdir()), sorted(run.rglob("*"))
        monkeypatch.undo()
        _passes_callback(compose_cfg("train_2d", [*SMALL, f"dataset.root={kvasir}"], run))


# ---------------------------------------------------------------- 4: resume with changed settings
@pytest.fixture(scope="module")
def trained_run(data_root, tmp_path_factory):
    """A one-step kvasir run (SAM2 tiny at 64 px) stopped after epoch 1 of 2."""
    run = tmp_path_factory.mktemp("resume_src") / "run"
    run_entry(
        "train_2d",
        [f"dataset.root={data_root / 'kvasir'}", "trainer.limit_train_batches=1", "logger=none"],
        run,
    )
    return run


def _resume(trained_run, tmp_path, data_root, *extra):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    over = [
        *SMALL,
        f"dataset.root={data_root / 'kvasir'}",
        "trainer.limit_train_batches=1",
        "logger=none",
        f"trainer.resume={run / 'checkpoint_last.pth'}",
        *extra,
    ]
    return run, compose_cfg("train_2d", over, run)


@pytest.mark.parametrize(
    "extra, key, old, new",
    [
        (["dataset=refuge", "dataset.root={refuge}"], "dataset.name", "kvasir", "refuge"),
        (["optim=sgd"], "optim._target_", "torch.optim.AdamW", "torch.optim.SGD"),
    ],
)
def test_resume_with_another_dataset_or_optimizer_is_refused(
    extra, key, old, new, trained_run, data_root, tmp_path, capsys
):
    from medseg.run.app import run as app_run

    extra = [e.format(refuge=data_root / "refuge") for e in extra]
    run, cfg = _resume(trained_run, tmp_path, data_root, *extra)
    before = snapshot(run)
    line = one_line_exit(lambda: app_run(cfg, mode="2d", task_key="task_2d"), capsys)
    assert key in line and old in line and new in line and "refused" in line, line
    assert "missing key" not in line
    assert snapshot(run) == before


def test_resume_with_another_lr_applies_it_and_records_it(trained_run, data_root, tmp_path, caplog):
    from medseg.run.app import run as app_run

    run, cfg = _resume(trained_run, tmp_path, data_root, "optim.lr=1e-2", "trainer.max_epochs=2")
    with caplog.at_level(logging.INFO):
        app_run(cfg, mode="2d", task_key="task_2d")
    assert "resume: optim.lr changed 0.0001 -> 0.01 (applied)" in caplog.text
    assert "resume: trainer.max_epochs changed 1 -> 2 (applied)" in caplog.text
    ck = torch.load(run / "checkpoint_last.pth", map_location="cpu", weights_only=True)
    assert ck["epoch"] == 2
    assert ck["scheduler"]["base_lrs"][0] == pytest.approx(1e-2)
    assert ck["optimizer"]["param_groups"][0]["initial_lr"] == pytest.approx(1e-2)
    summary = json.loads((run / "run_summary.json").read_text(encoding="utf-8"))
    changes = {c["key"]: c for c in summary["resume_changes"]}
    assert changes["optim.lr"]["old"] == pytest.approx(1e-4) and changes["optim.lr"]["new"] == pytest.approx(
        1e-2
    )
    assert changes["optim.lr"]["policy"] == "apply"
    assert ck["resume_changes"] == summary["resume_changes"]


def _row_example(row):
    """(old, new) config dicts differing only at ``row.example`` key."""
    from omegaconf import OmegaConf

    key, old, new = row.example
    base = {"optim": {"_target_": "torch.optim.AdamW", "lr": 1e-4}, "trainer": {"max_epochs": 2}}
    a, b = OmegaConf.create(base), OmegaConf.create(base)
    OmegaConf.update(a, key, old, force_add=True)
    OmegaConf.update(b, key, new, force_add=True)
    return OmegaConf.to_container(a), OmegaConf.to_container(b)


def _rows():
    from medseg.train.resume_policy import RESUME_POLICY

    return RESUME_POLICY


@pytest.mark.parametrize("row", _rows(), ids=lambda r: f"{r.key}:{r.policy}")
def test_resume_policy_table_row(row, tmp_path):
    """Every row of the table: a change of its key is refused with one line naming the key, old and new
    value, or applied and returned as a recorded change."""
    from medseg.train.resume_policy import check_resume_settings, row_of

    assert row_of(row.example[0]) is row  # the example is governed by this row
    old, new = _row_example(row)
    path = tmp_path / "checkpoint_last.pth"
    if row.policy == "refuse":
        with pytest.raises(ValueError) as e:
            check_resume_settings(old, new, path)
        msg = str(e.value)
        key, a, b = row.example
        assert "\n" not in msg and str(path) in msg and f"{key} changed {a!r} -> {b!r}" in msg, msg
        assert "refused" in msg and row.why in msg, msg
    else:
        changes = check_resume_settings(old, new, path)
        assert [c["key"] for c in changes] == [row.example[0]] and changes[0]["policy"] == row.policy
    assert check_resume_settings(old, old, path) == []


# ---------------------------------------------------------------- 3: inference uses the checkpoint's split
def _our_checkpoint(path, **extra):
    """A checkpoint of this suite (SAM2 tiny, 64 px, random weights) with ``extra`` run metadata."""
    from sam2_train import build_sam2_model

    torch.manual_seed(0)
    model = build_sam2_model("sam2.1_hiera_t", image_size=64)
    # the model node a training run records (family plugin included), as a real checkpoint holds it
    cfg = compose_cfg("train_3d", ["model=sam2.1_hiera_t", "model.image_size=64"], path.parent / "compose")
    mc = OmegaConf.to_container(cfg.model, resolve=True)
    mc["checkpoint"] = None
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"format": "sam2-medical/1", "model": model.state_dict(), "model_cfg": mc, **extra}, path)
    return path


def _inf_cfg(tmp_path, nnunet, ckpt, *extra):
    return compose_cfg(
        "inference_3d",
        [
            f"checkpoint={ckpt}",
            f"dataset.root={nnunet}",
            f"output_dir={tmp_path / 'preds'}",
            "trainer.device=cpu",
            *extra,
        ],
        tmp_path / "hydra_inf",
    )


def _fingerprint(root):
    from medseg.data.datasets import build_dataset
    from medseg.data.splits import dataset_fingerprint

    cfg = _inf_cfg(root.parent, root, "x.pth")
    return dataset_fingerprint(build_dataset(cfg.dataset))


def test_moved_checkpoint_scores_the_val_cases_it_carries(nnunet, tmp_path):
    """The checkpoint's own split (not one drawn again from the config) decides which cases are val."""
    from func_3d.inference import run_inference
    from medseg.data.datasets import build_dataset
    from medseg.data.splits import resolve_splits

    cfg0 = _inf_cfg(tmp_path, nnunet, "x.pth")
    redrawn = resolve_splits(build_dataset(cfg0.dataset), cfg0.dataset.split, None)
    ids = sorted(nnunet.glob("imagesTr/*_0000.nii.gz"))
    ids = [p.name[: -len("_0000.nii.gz")] for p in ids]
    val = [i for i in ids if i not in redrawn["val"]][:1]  # a case a re-drawn split would call training
    splits = {"train": [i for i in ids if i not in val], "val": val, "test": []}
    ckpt = _our_checkpoint(tmp_path / "moved" / "best.pth", splits=splits, dataset=_fingerprint(nnunet))
    run_inference(_inf_cfg(tmp_path, nnunet, ckpt, "split=val"))
    assert sorted(p.stem for p in (tmp_path / "preds").glob("*.npy")) == val


@pytest.mark.parametrize("split", ["val", "test"])
def test_checkpoint_without_split_refuses_val_and_test(split, nnunet, tmp_path, capsys):
    """An older checkpoint moved out of its run folder: no split to trust, so val/test are refused."""
    from func_3d.inference import run_inference

    ckpt = _our_checkpoint(tmp_path / "moved" / "best.pth")
    line = one_line_exit(lambda: run_inference(_inf_cfg(tmp_path, nnunet, ckpt, f"split={split}")), capsys)
    assert str(ckpt) in line and "splits_file=" in line and "split=all" in line, line
    assert not (tmp_path / "preds").exists()


def test_case_selection_rules(nnunet, tmp_path):
    """split=all needs no split; an old checkpoint beside its run's splits.json uses it; splits_file is
    used when given; a split of another dataset (fingerprint) or a splits_file whose val holds the
    checkpoint's training cases is refused."""
    from func_3d.inference import select_cases
    from medseg.data.datasets import build_dataset

    cfg = _inf_cfg(tmp_path, nnunet, "x.pth", "split=all")
    ds = build_dataset(cfg.dataset)
    ids = sorted(ds.all_case_ids)
    assert select_cases(cfg, {}, ds, tmp_path / "x.pth") == list(ds.case_ids)
    run = tmp_path / "run"
    old = _our_checkpoint(run / "checkpoint_best.pth")
    (run / "splits.json").write_text(
        json.dumps({"train": ids[1:], "val": ids[:1], "test": []}), encoding="utf-8"
    )
    cfg = _inf_cfg(tmp_path, nnunet, old, "split=val")
    assert select_cases(cfg, {"format": "sam2-medical/1"}, ds, old) == ids[:1]
    sf = tmp_path / "mine.json"
    sf.write_text(json.dumps({"train": ids[:2], "val": ids[2:3], "test": []}), encoding="utf-8")
    cfg = _inf_cfg(tmp_path, nnunet, old, "split=val", f"splits_file={sf}")
    assert select_cases(cfg, {"format": "sam2-medical/1"}, ds, old) == ids[2:3]
    ck = {"format": "sam2-medical/1", "splits": {"train": ids[2:], "val": ids[:1], "test": []}}
    with pytest.raises(ValueError, match="training cases"):
        select_cases(cfg, ck, ds, old)  # splits_file's val holds a case the checkpoint trained on
    other = {**ck, "dataset": {**_fingerprint(nnunet), "ids_sha256": "0" * 16}}
    cfg = _inf_cfg(tmp_path, nnunet, old, "split=val")
    with pytest.raises(ValueError, match="fingerprint"):
        select_cases(cfg, other, ds, old)


# ---------------------------------------------------------------- 9: the same through the command line
@pytest.mark.parametrize("case", ["missing_logger_package", "late_failure"])
def test_cli_refused_or_failed_start_leaves_no_folder(case, kvasir, tmp_path):
    """Real ``train_2d.py`` runs: a missing logger package is refused before Hydra writes anything; a start
    that fails after Hydra wrote ``.hydra/`` and the log (no dataset there) removes what it wrote. Either
    way the corrected command can use the same ``hydra.run.dir``."""
    from tests.conftest import CLI_SMALL, run_cli

    fake = tmp_path / "site"
    fake.mkdir()
    (fake / "wandb.py").write_text(
        "raise ImportError('No module named wandb')\n", encoding="utf-8"
    )  # as without the extra
    run = tmp_path / "run"
    if case == "missing_logger_package":
        extra, env, needle = (
            [f"dataset.root={kvasir}", "logger=wandb"],
            {"PYTHONPATH": str(fake)},
            "logger=wandb",
        )
    else:
        extra, env, needle = [f"dataset.root={tmp_path / 'no_data'}"], {}, str(tmp_path / "no_data")
    r = run_cli("train_2d.py", *CLI_SMALL, "trainer.max_epochs=1", f"hydra.run.dir={run}", *extra, env=env)
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(err) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert needle in err[0], err[0]
    assert not run.exists(), sorted(run.rglob("*"))
