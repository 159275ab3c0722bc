"""A family added only in the tests (tests/toy_family: one package, one yaml) trains, evaluates and predicts
2D images and 3D volumes through the public contract, with the same commands as every other family."""

from __future__ import annotations

import numpy as np
from omegaconf import OmegaConf, open_dict

from medseg.data import synthetic
from tests.conftest import SMALL, compose_cfg
from tests.toy_family import TOY_YAML


def _with_toy(cfg):
    with open_dict(cfg):
        cfg.model = OmegaConf.create(TOY_YAML)
    return cfg


def test_toy_family_trains_evaluates_and_predicts(data_root, tmp_path):
    from func_3d.inference import run_inference
    from medseg.family import ModelFamily, build_family
    from medseg.run.app import run
    from medseg.run.inference_2d import run_inference_2d

    assert isinstance(build_family(OmegaConf.create(TOY_YAML)), ModelFamily)
    kv = [f"dataset.root={data_root / 'kvasir'}", "logger=none", "loss=dice_bce"]
    train = tmp_path / "train"
    run(_with_toy(compose_cfg("train_2d", [*SMALL, *kv], train)), mode="2d", task_key="task_2d")
    ckpt = train / "checkpoint_best.pth"
    assert ckpt.is_file() and (train / "metrics.csv").is_file()

    ev = tmp_path / "eval"
    cfg = _with_toy(compose_cfg("train_2d", [*SMALL, *kv, "train=false"], ev))
    cfg.model.checkpoint = str(ckpt)
    summary = run(cfg, mode="2d", task_key="task_2d")
    assert summary is None or np.isfinite(summary)
    assert (ev / "val_cases.csv").is_file() or (ev / "metrics.csv").is_file()

    images = synthetic.write_folder2d(tmp_path / "new", n=2, size=48) / "images"
    out2 = tmp_path / "pred2d"
    i2 = [
        f"checkpoint={ckpt}",
        f"input_dir={images}",
        f"output_dir={out2}",
        "trainer.device=cpu",
        "prompt=none",
    ]
    run_inference_2d(compose_cfg("inference_2d", i2, tmp_path / "h2"))
    assert sorted(p.name for p in out2.glob("*.npy")) == ["sample_000.npy", "sample_001.npy"]

    vols = synthetic.write_nnunet(tmp_path / "vol", n_cases=2, depth=4, size=32, n_organs=1, n_test=0)
    out3 = tmp_path / "pred3d"
    i3 = [
        f"checkpoint={ckpt}",
        f"dataset.root={vols}",
        "split=all",
        f"output_dir={out3}",
        "trainer.device=cpu",
    ]
    rows = run_inference(compose_cfg("inference_3d", i3, tmp_path / "h3"))
    assert len(rows) == 2
    assert all(np.load(out3 / f"case_00{i}.npy").shape == (4, 32, 32) for i in range(2))
