"""The engine on a toy task (a linear model on seeded random samples): accumulation, clipping, NaN guard,
exact resume, checkpoint contents. No SAM2 involved, so each test runs in about a second."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.eval.tables import read_csv
from medseg.schema import DDPConfig, TrainerConfig
from medseg.train.contract import RunSpec
from medseg.train.engine import Engine, TrainingError
from medseg.train.optim import warmup_constant
from medseg.train.runtime import DistInfo

W_TRUE = torch.tensor([[1.5, -2.0, 0.5, 1.0]])


class ToySamples:
    """Sample i of epoch e: x ~ N(0, 1)^4 drawn from the engine's per-(seed, epoch, index) generator."""

    def __init__(self, n: int = 16):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def get(self, i: int, rng: np.random.Generator) -> dict:
        x = torch.as_tensor(rng.standard_normal(4), dtype=torch.float32)
        return {"x": x, "y": (W_TRUE @ x).reshape(1)}


class ToyBatch:
    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def to(self, device) -> ToyBatch:
        return ToyBatch(self.x.to(device), self.y.to(device))


class ToyTask:
    """Mean squared error of a linear model; validation scores ``val/dice = -mse`` on fixed samples."""

    def __init__(self, n: int = 16, nan_at_call: int | None = None):
        self.train_dataset = ToySamples(n)
        self.calls = 0
        self.nan_at_call = nan_at_call

    @staticmethod
    def collate(samples: list[dict]) -> ToyBatch:
        return ToyBatch(torch.stack([s["x"] for s in samples]), torch.stack([s["y"] for s in samples]))

    def training_step(self, model, batch: ToyBatch) -> dict:
        self.calls += 1
        err = (model(batch.x) - batch.y).square().mean()
        if self.nan_at_call is not None and self.calls == self.nan_at_call:
            err = err * float("nan")
        return {"loss": err, "mse": err.detach()}

    def validate(self, model, *, epoch: int, vis_dir):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(32, 4, generator=g).to(model.weight.device)
        mse = float((model(x).float() - x @ W_TRUE.to(x.device).T).square().mean())
        return {"val/dice": -mse}, [{"case_id": "toy", "class_id": 1, "dice": -mse}], {}


def toy_trainer(device: str = "cpu", **trainer) -> TrainerConfig:
    """The engine's typed trainer options: the schema defaults with a toy's sizes."""
    base = {
        "device": device,
        "max_epochs": 2,
        "batch_size": 4,
        "num_workers": 0,
        "pin_memory": False,
        "gradient_clip_val": None,
        "amp": False,
        "ddp": DDPConfig(find_unused_parameters=False),
        "log_every_n_steps": 1,
        "progress_bar": False,
    }
    return TrainerConfig(**{**base, **trainer})


def toy_run(**spec) -> RunSpec:
    """What the engine needs besides the trainer: seed, SGD(lr 0.05), a constant lr; no config object."""
    return RunSpec(
        seed=5,
        optimizer=lambda m: torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.05),
        scheduler=lambda opt, total: warmup_constant(opt, total_steps=total),
        model_name="toy",
        **spec,
    )


def fit(out, task=None, device=torch.device("cpu"), **trainer) -> tuple[Engine, torch.nn.Module]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1, bias=False).to(device)
    eng = Engine(
        trainer=toy_trainer(device=device.type, **trainer),
        run=toy_run(),
        task=task or ToyTask(),
        model=model,
        out_dir=out,
        device=device,
        dist_info=DistInfo(),
    )
    out.mkdir(parents=True, exist_ok=True)
    eng.fit()
    return eng, model


def test_toy_task_learns_and_writes_the_outputs(tmp_path, device):
    """On each device; on CUDA the engine's step runs under bf16 autocast (``trainer.amp``)."""
    eng, model = fit(tmp_path / "run", device=device, amp=device.type == "cuda", max_epochs=5)
    assert eng.amp == (device.type == "cuda")
    rows = read_csv(tmp_path / "run" / "metrics.csv")
    assert len(rows) == 5 and float(rows[-1]["val/dice"]) > float(rows[0]["val/dice"])
    ck = torch.load(tmp_path / "run" / "checkpoint_last.pth", map_location="cpu", weights_only=True)
    assert ck["epoch"] == 5 and ck["step"] == 5 * 4 and torch.equal(ck["model"]["weight"], model.weight.cpu())
    for key in ("optimizer", "scheduler", "rng", "config", "best"):
        assert key in ck, key
    best = torch.load(tmp_path / "run" / "checkpoint_best.pth", map_location="cpu", weights_only=True)
    assert "optimizer" not in best and best["best"]["epoch"] == 5


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    """SGD without momentum: 2 batches of 2 accumulated == 1 batch of 4 (the loss is a mean)."""
    _, big = fit(tmp_path / "a", batch_size=4, max_epochs=1)
    _, acc = fit(tmp_path / "b", batch_size=2, accumulate_grad_batches=2, max_epochs=1)
    assert torch.allclose(big.weight, acc.weight, atol=1e-6)
    steps = [torch.load(tmp_path / d / "checkpoint_last.pth", weights_only=True)["step"] for d in "ab"]
    assert steps == [4, 4]
    _, single = fit(tmp_path / "c", batch_size=2, max_epochs=1)
    assert not torch.allclose(big.weight, single.weight, atol=1e-4)  # the comparison can fail


def test_gradient_clipping_bounds_each_update(tmp_path):
    clip, lr = 1e-3, 0.05
    torch.manual_seed(0)
    start = torch.nn.Linear(4, 1, bias=False).weight.detach().clone()
    _, model = fit(tmp_path / "run", gradient_clip_val=clip, max_epochs=1, max_steps=1)
    assert float((model.weight.detach() - start).norm()) <= lr * clip * (1 + 1e-3)
    _, free = fit(tmp_path / "free", max_epochs=1, max_steps=1)
    assert float((free.weight.detach() - start).norm()) > lr * clip * 10  # clipping did something


def test_nan_loss_stops_with_the_step_and_last_good_checkpoint(tmp_path):
    with pytest.raises(TrainingError, match=r"non-finite loss at epoch 1 .*checkpoint_last\.pth"):
        fit(tmp_path / "run", task=ToyTask(nan_at_call=6), max_epochs=3)
    ck = torch.load(tmp_path / "run" / "checkpoint_last.pth", map_location="cpu", weights_only=True)
    assert ck["epoch"] == 1 and torch.isfinite(ck["model"]["weight"]).all()


def test_resume_is_exact(tmp_path, device):
    _, straight = fit(tmp_path / "straight", device=device, max_epochs=3)
    fit(tmp_path / "split", device=device, max_epochs=1)
    last = str(tmp_path / "split" / "checkpoint_last.pth")
    _, resumed = fit(tmp_path / "split", device=device, max_epochs=3, resume=last)
    assert torch.equal(straight.weight, resumed.weight)
    rows = read_csv(tmp_path / "split" / "metrics.csv")
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]  # no lost or repeated rows
    assert rows == read_csv(tmp_path / "straight" / "metrics.csv") or [r["val/dice"] for r in rows] == [
        r["val/dice"] for r in read_csv(tmp_path / "straight" / "metrics.csv")
    ]


def test_the_engine_takes_trainer_options_and_a_run_spec_never_the_config(tmp_path):
    """Issue 22, item 4: no ``cfg`` parameter or attribute; the trainer options are the typed schema."""
    import inspect

    params = inspect.signature(Engine.__init__).parameters
    assert "cfg" not in params and {"trainer", "task", "run"} <= set(params)
    eng, _ = fit(tmp_path / "run", max_epochs=1)
    assert not hasattr(eng, "cfg") and isinstance(eng.t, TrainerConfig)
    ck = torch.load(tmp_path / "run" / "checkpoint_last.pth", map_location="cpu", weights_only=True)
    assert ck["config"] == eng.run.record  # the run's record, as given by the run layer
