"""logger= group: TensorBoard, CSV, W&B (offline) and MLflow (local file store) each record a 2-step run."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys

import pytest

from tests.conftest import compose_cfg, run_entry

OPTIONAL = [m for m in ("wandb", "mlflow") if importlib.util.find_spec(m) is not None]


@pytest.fixture(scope="module")
def logged_run(data_root, tmp_path_factory):
    """One 2-step 2D run with every installed backend at once (``logger=[a,b,...]``)."""
    out = tmp_path_factory.mktemp("logged")
    names = ["tensorboard", "csv", *OPTIONAL]
    cfg, _ = run_entry(
        "train_2d",
        [
            f"dataset.root={data_root / 'kvasir'}",
            "model=unet",  # the loggers sit in the shared engine: the quickest model exercises them
            "model.image_size=64",
            "loss=dice_bce",
            f"logger=[{','.join(names)}]",
            "logger.log_images=true",
            "vis=true",
            "vis_max_cases=1",
            "trainer.log_every_n_steps=1",
            f"paths.log_dir={out / 'logs'}",
        ],
        out / "run",
    )
    rows = list(csv.DictReader(open(out / "run" / "csv" / "scalars.csv", encoding="utf-8")))
    return out, cfg, rows


def _train_and_val_names(names) -> None:
    names = set(names)
    assert {"train/loss", "val/dice"} <= names
    assert any(n.startswith("lr/") for n in names)


def test_config_group_selects_several_loggers(tmp_path):
    cfg = compose_cfg("train_2d", ["logger=[tensorboard,csv]"], tmp_path)
    assert cfg.logger.tensorboard._target_ == "medseg.train.loggers.TensorBoardLogger"
    assert cfg.logger.csv._target_ == "medseg.train.loggers.CSVLogger"
    assert "csv" not in compose_cfg("train_2d", [], tmp_path).logger  # tensorboard alone by default


def test_csv_rows_hold_every_scalar_at_both_steps(logged_run):
    out, cfg, rows = logged_run
    _train_and_val_names(r["name"] for r in rows)
    assert sorted({int(r["step"]) for r in rows if r["name"] == "train/loss"}) == [1, 2]
    assert (
        json.loads((out / "run" / "csv" / "hparams.json").read_text(encoding="utf-8"))["model"]["image_size"]
        == 64
    )


def test_tensorboard_event_file_has_the_same_scalars(logged_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _, rows = logged_run
    ea = EventAccumulator(str(out / "run" / "tensorboard"))
    ea.Reload()
    assert set(ea.Tags()["scalars"]) == {r["name"] for r in rows}
    assert ea.Tags()["images"]  # the validation grid


def test_wandb_offline_run_folder(logged_run):
    pytest.importorskip("wandb", reason="wandb is not installed (extra: loggers)")
    out, _, rows = logged_run
    runs = list((out / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    (record,) = runs[0].glob("run-*.wandb")  # the offline transaction log that `wandb sync` uploads
    data = record.read_bytes()
    for name in {r["name"] for r in rows} | {"image_size"}:  # every scalar name and the config
        assert name.encode() in data, name
    assert list((runs[0] / "files" / "media" / "images").rglob("*.png"))  # the validation grid


def test_mlflow_local_store_has_the_metrics(logged_run):
    mlflow = pytest.importorskip("mlflow", reason="mlflow is not installed (extra: loggers)")
    out, cfg, rows = logged_run
    store = out / "logs" / "mlruns"
    client = mlflow.tracking.MlflowClient(tracking_uri=store.resolve().as_uri())
    exp = client.get_experiment_by_name(cfg.task_name)
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FINISHED"
    _train_and_val_names(k.replace(".", "/") for k in run.data.metrics)
    assert len(run.data.metrics) == len({r["name"] for r in rows})
    history = client.get_metric_history(run.info.run_id, "train.loss")
    assert sorted(m.step for m in history) == [1, 2]
    assert run.data.params["model.image_size"] == "64"


@pytest.mark.parametrize("backend", ["wandb", "mlflow"])
def test_missing_optional_package_is_one_line_naming_the_extra(backend, tmp_path, monkeypatch):
    from medseg.errors import MissingExtraError
    from medseg.train.loggers import build_loggers

    monkeypatch.setitem(sys.modules, backend, None)  # import fails as if not installed
    cfg = compose_cfg("train_2d", [f"logger={backend}", f"paths.log_dir={tmp_path}"], tmp_path)
    with pytest.raises(MissingExtraError) as err:
        build_loggers(cfg.logger, tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and f"logger={backend}" in msg and ".[loggers]" in msg


def test_only_rank_zero_logs(tmp_path):
    from medseg.train.loggers import build_loggers

    cfg = compose_cfg("train_2d", ["logger=csv"], tmp_path)
    assert not build_loggers(cfg.logger, tmp_path, is_main=False)
    assert not (tmp_path / "csv").exists()
