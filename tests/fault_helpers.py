"""Helpers shared by the fault tests (issue 13): ``test_reliability_runs.py`` (run folders,
locks, weights files) and ``test_reliability_inputs.py`` (data pre-flight, config checks).

``one_line_exit`` / ``callback_exit`` run code the way the command line does and assert one ``error:``
line without a traceback; ``snapshot`` / ``finished_run`` prove earlier files byte-for-byte unchanged;
``evil_pickle`` writes a weights file that would run a command when unpickled. The small writable
datasets (fixtures ``kvasir``, ``nnunet``) are in ``conftest.py``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from medseg.run.cli import user_errors_as_one_line
from medseg.run.rundir import RunFolderCallback
from tests.conftest import compose_cfg


def one_line_exit(fn, capsys, code: int = 2) -> str:
    """Run ``fn`` under the entry points' wrapper; assert exit ``code``, one stderr line, no traceback."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        user_errors_as_one_line(fn)()
    assert e.value.code == code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def callback_exit(cfg, capsys) -> str:
    """What the command line does before Hydra writes anything: the run-folder callback."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        RunFolderCallback().on_run_start(config=cfg)
    assert e.value.code == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def composed(root: str, overrides: list[str], out_dir: Path):
    """What the command line does before the run starts, as one callable: compose ``root`` with
    ``overrides`` (a composition error is the entry points' one line, exit 2), then the run-folder
    callback (the config checks). For ``refused``/``one_line_exit``-style assertions."""
    from hydra.errors import CompactHydraException

    from medseg.run.cli import exit_with_composition_error

    def start():
        try:
            cfg = compose_cfg(root, overrides, out_dir)
        except CompactHydraException as ex:
            exit_with_composition_error(ex)
        RunFolderCallback().on_run_start(config=cfg)

    return start


def composed_exit(root: str, overrides: list[str], out_dir: Path, capsys) -> str:
    """:func:`composed` asserted as one ``error:`` line, exit 2, no traceback; returns the line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        composed(root, overrides, out_dir)()
    assert e.value.code == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def finished_run(folder: Path) -> dict[str, bytes]:
    """A folder as a finished run leaves it (checkpoints, tables, summary, .hydra/)."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("dataset:\n  name: kvasir\n", encoding="utf-8")
    last = {
        "format": "sam2-medical/1",
        "model": {"w": torch.ones(2)},
        "optimizer": {},
    }  # a training checkpoint
    torch.save(last, folder / "checkpoint_last.pth")
    (folder / "metrics.csv").write_text("epoch,step,val/dice\n1,2,0.5\n", encoding="utf-8")
    (folder / "run_summary.json").write_text(json.dumps({"epochs": 1}), encoding="utf-8")
    return snapshot(folder)


def evil_pickle(path: Path, marker: Path) -> Path:
    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"model": Evil()}, path)
    return path


def meta_ckpt(tmp_path: Path) -> Path:
    """A Meta-format SAM2 checkpoint (Hiera-T, 64 px, random weights)."""
    from sam2_train import build_sam2_model

    path = tmp_path / "meta.pt"
    model = build_sam2_model("sam2.1_hiera_t", image_size=64, checkpoint=None)
    torch.save({"model": model.state_dict()}, path)
    return path


def inference_cfg(tmp_path, nnunet, ckpt, preds, *extra):
    """``inference_3d`` on the ``nnunet`` fixture's cases, predictions into ``preds``."""
    return compose_cfg(
        "inference_3d",
        [
            f"checkpoint={ckpt}",
            "model=sam2.1_hiera_t",
            "model.image_size=64",
            f"dataset.root={nnunet}",
            "split=all",
            f"output_dir={preds}",
            "trainer.device=cpu",
            *extra,
        ],
        tmp_path / "hydra_inf",
    )
