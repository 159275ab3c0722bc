"""A toy task for the engine's distributed and pre-emption tests: light to import (spawned workers
load only this, torch and medseg.train.engine), exact in fp32, with a trainable parameter the step never uses."""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from medseg.train.runtime import finish_distributed

ROOT = Path(__file__).resolve().parents[1]


class ToyNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
        self.unused = torch.nn.Linear(4, 1)  # trainable, never in the step (like SAM2's memory in 2D)


class ToyData:
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def get(self, i: int, rng: np.random.Generator) -> dict:
        x = torch.from_numpy(rng.standard_normal(4).astype(np.float32))
        return {"x": x, "y": torch.tanh(x[:2].sum(0, keepdim=True)), "i": i}


@dataclass
class ToyBatch:
    x: torch.Tensor
    y: torch.Tensor

    def to(self, device):
        return ToyBatch(self.x.to(device), self.y.to(device))


class ToyTask:
    """``kill_at``: (step call number, signal) sent to this process from inside the training step."""

    def __init__(self, n: int = 16, n_val: int = 5, kill_at: tuple[int, int] | None = None):
        self.train_dataset = ToyData(n)
        self.n_val = n_val
        self.kill_at = kill_at
        self.calls = 0

    def collate(self, samples):
        return ToyBatch(torch.stack([s["x"] for s in samples]), torch.stack([s["y"] for s in samples]))

    def training_step(self, model, batch: ToyBatch) -> dict:
        # DDP's unused-parameter probe sees the first batch twice: count batches, not calls
        if batch is not getattr(self, "_last", None):
            self.calls, self._last = self.calls + 1, batch
        if self.kill_at and self.calls == self.kill_at[0] and batch is not getattr(self, "_killed", None):
            self._killed = batch
            os.kill(os.getpid(), self.kill_at[1])
        pred = model.body(batch.x)  # a submodule, as the SAM2 tasks call model.image_encoder etc.
        return {"loss": ((pred - batch.y) ** 2).mean()}

    def validate(self, model, *, epoch: int, vis_dir=None, shard=None):
        g = torch.Generator().manual_seed(99)
        x = torch.randn(self.n_val, 4, generator=g).to(next(model.parameters()).device)
        err = ((model.body(x) - torch.tanh(x[:, :2].sum(1, keepdim=True))) ** 2)[:, 0]
        rows = [{"case_id": f"case{i}", "class": "all", "dice": float(1 - e)} for i, e in enumerate(err)]
        return {"val/dice": float(1 - err.mean())}, rows, {}


def toy_trainer(**trainer):
    """Typed trainer options (the schema's defaults) for the toy: one epoch of batch 2 on the CPU."""
    from medseg.schema import TrainerConfig

    base = {"device": "cpu", "num_workers": 0, "amp": False, "progress_bar": False, "max_epochs": 1,
            "batch_size": 2, "gradient_clip_val": None}  # fmt: skip
    t = OmegaConf.merge(OmegaConf.structured(TrainerConfig), base, trainer)
    return OmegaConf.to_object(t)


def toy_run():
    """Seed 3, SGD (momentum 0.9, weight decay 1e-4, lr 0.01) and a constant lr, as conf/optim/sgd.yaml."""
    from medseg.train.contract import RunSpec
    from medseg.train.optim import warmup_constant

    return RunSpec(
        seed=3,
        optimizer=lambda m: torch.optim.SGD(
            [p for p in m.parameters() if p.requires_grad], lr=1e-2, momentum=0.9, weight_decay=1e-4
        ),
        scheduler=lambda opt, total: warmup_constant(opt, total_steps=total),
        model_name="toy",
    )


def run_toy(out: Path, task: ToyTask | None = None, dist_info=None, device=torch.device("cpu"), **trainer):
    """Fit ToyNet (seed 0) on ``device`` under ``trainer`` overrides; returns the engine."""
    from medseg.train.engine import Engine

    torch.manual_seed(0)
    eng = Engine(
        trainer=toy_trainer(**{"device": device.type, **trainer}),
        run=toy_run(),
        task=task or ToyTask(),
        model=ToyNet().to(device),
        out_dir=out,
        device=device,
        dist_info=dist_info,
    )
    eng.fit()
    return eng


def spawn_worker(
    rank: int,
    world: int,
    port: int,
    out: str,
    trainer: dict,
    kill_rank: int | None,
    kill_at,
    cuda: bool = False,
):
    """One of ``world`` gloo processes (nccl on ``cuda:<rank>`` when ``cuda``; torch.multiprocessing.spawn):
    fit the toy task, save what the test checks; a RunInterrupted stop is recorded, not raised."""
    import torch.distributed as dist

    from medseg.train.preemption import RunInterrupted
    from medseg.train.runtime import init_distributed

    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    device = torch.device(f"cuda:{rank}") if cuda else torch.device("cpu")
    info = init_distributed(device)
    task = ToyTask(kill_at=(kill_at, signal.SIGTERM) if kill_rank == rank else None)
    try:
        eng = run_toy(Path(out), task, dist_info=info, device=device, **trainer)
        stopped = None
    except RunInterrupted as e:
        eng, stopped = None, e.signum
    if rank == 0 and eng is not None:
        from torch.nn.parallel import DistributedDataParallel

        torch.save(
            {
                "ddp": isinstance(eng.train_model, DistributedDataParallel),
                "find_unused": getattr(eng.train_model, "find_unused_parameters", None),
            },
            Path(out) / "probe.pt",
        )
    torch.save({"stopped": stopped}, Path(out) / f"rank{rank}.pt")
    assert finish_distributed() and not dist.is_initialized()  # the group init_distributed opened


def toy_cases(n: int = 7):
    """``n`` small 2-class label maps and predictions that differ from them (some empty, some missed)."""
    rng = np.random.default_rng(5)
    out = []
    for i in range(n):
        target = (rng.random((12, 12)) > 0.6).astype(np.int64) * (1 + i % 2)
        pred = np.where(rng.random((12, 12)) > 0.8, 0, target)
        if i == 3:
            pred[:] = 0  # a missed object
        out.append((f"case{i}", pred, target))
    return out


def evaluate_toy(shard=None):
    """run_evaluation over :func:`toy_cases` (a case of ``None`` = skipped, as a missing prompt is)."""
    from medseg.data.prompts import PromptConfig
    from medseg.eval.evaluation import CaseResult, EvalProtocol, run_evaluation

    cases = toy_cases()
    protocol = EvalProtocol(prompt=PromptConfig(type="box"))

    def evaluate_case(i):
        if i == 5:
            return None
        cid, pred, target = cases[i]
        return CaseResult(cid, pred, target, (1.0, 1.0), {1: "a", 2: "b"})

    return run_evaluation(len(cases), evaluate_case, protocol, progress=False, shard=shard)


def eval_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    summary, rows, _ = evaluate_toy(shard=(rank, world))
    torch.save({"summary": summary, "rows": rows}, Path(out) / f"eval{rank}.pt")
    assert not finish_distributed()  # a group the caller opened is the caller's to close
    dist.barrier()
    dist.destroy_process_group()
