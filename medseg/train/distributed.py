"""Data parallelism: the process group from torchrun's, SLURM's or submitit's environment, the model
wrapped in ``DistributedDataParallel``, and case sharding with rows gathered on rank 0.

One code path for every launcher: :func:`export_cluster_env` turns SLURM's / submitit's variables into
the ``RANK`` / ``LOCAL_RANK`` / ``WORLD_SIZE`` / ``MASTER_ADDR`` / ``MASTER_PORT`` that torchrun sets,
then ``torch.distributed`` initialises from them (``env://``) as under torchrun.
"""

from __future__ import annotations

import copy
import logging
import os
import re

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from medseg.train.contract import StatefulTask

log = logging.getLogger(__name__)


def first_host(nodelist: str) -> str:
    """First host of a SLURM node list: ``gpu[03-05,9],cpu1`` -> ``gpu03`` (what ``scontrol show
    hostnames`` prints first)."""
    m = re.match(r"([^,\[]+)(?:\[([^\]]+)\])?", nodelist.strip())
    if not m:
        raise ValueError(f"SLURM_JOB_NODELIST={nodelist!r}: cannot read the first host")
    prefix, ranges = m.group(1), m.group(2)
    return prefix + ranges.split(",")[0].split("-")[0] if ranges else prefix


def launcher_rank(env: dict | None = None) -> int:
    """This process's global rank as its launcher tells it (torchrun, submitit, srun), 0 when alone."""
    env = os.environ if env is None else env
    for key in ("RANK", "SUBMITIT_LOCAL_GLOBALID", "SLURM_PROCID"):
        if env.get(key):
            return int(env[key])
    return 0


def export_cluster_env(env: dict | None = None) -> str:
    """Set torchrun's variables from the launcher's environment; returns which launcher was found.

    - torchrun (``RANK`` and ``WORLD_SIZE`` set): nothing to do.
    - submitit (``SUBMITIT_EXECUTOR``, e.g. ``-m launcher=slurm`` or ``launcher=submitit_local``):
      ``submitit.helpers.TorchDistributedEnvironment``.
    - ``srun`` (``SLURM_PROCID`` and ``SLURM_NTASKS`` > 1, e.g. ``train_slurm.sh``): rank = SLURM_PROCID,
      local rank = SLURM_LOCALID, world = SLURM_NTASKS, master = first host of SLURM_JOB_NODELIST
      (or MASTER_ADDR), port = MASTER_PORT or 20000 + job id mod 20000.
    """
    env = os.environ if env is None else env
    if "RANK" in env and "WORLD_SIZE" in env:
        return "torchrun"
    if env.get("SUBMITIT_EXECUTOR") and env is os.environ:
        from submitit.helpers import TorchDistributedEnvironment

        # variables inherited from the shell that submitted the job (a login profile, an enclosing job) made
        # submitit refuse to export; the job's own values win (submitit keeps a MASTER_PORT it finds set)
        stale = sorted(k for k in ("MASTER_ADDR", "LOCAL_RANK", "LOCAL_WORLD_SIZE") if k in env)
        if stale:
            log.info("submitit job: inherited %s replaced by the job's own", ", ".join(stale))
        TorchDistributedEnvironment().export(set_cuda_visible_devices=False, overwrite=True)
        return "submitit"
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1:
        env["RANK"] = env["SLURM_PROCID"]
        env["LOCAL_RANK"] = env.get("SLURM_LOCALID", "0")
        env["WORLD_SIZE"] = env["SLURM_NTASKS"]
        if "MASTER_ADDR" not in env:
            env["MASTER_ADDR"] = first_host(env.get("SLURM_JOB_NODELIST", "localhost"))
        env.setdefault("MASTER_PORT", str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000))
        return "slurm"
    return "single"


class TrainStep(torch.nn.Module):
    """The task's whole training step as one ``forward``, so DDP sees every parameter the step uses
    (SAM2 tasks call submodules such as ``model.image_encoder`` directly, never ``model.forward``)."""

    def __init__(self, model: torch.nn.Module, task):
        super().__init__()
        self.model = model
        self.task = task  # not a Module: not registered, not in state_dict

    def forward(self, batch) -> dict:
        return self.task.training_step(self.model, batch)


def unused_trainable(step: TrainStep, batch, device: torch.device) -> list[str]:
    """Names of trainable parameters that the autograd graph of one step does not reach.

    Runs one forward of ``batch`` (no backward) with the RNG, the model's buffers (BatchNorm statistics
    of the baselines) and the task's state restored afterwards.
    """
    task = step.task
    saved = copy.deepcopy(task.state_dict()) if isinstance(task, StatefulTask) else None
    buffers = [(b, b.detach().clone()) for b in step.model.buffers()]
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        loss = step(batch)["loss"]
    reached, seen, stack = set(), set(), [loss.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        var = getattr(fn, "variable", None)
        if var is not None:
            reached.add(id(var))
        stack.extend(f for f, _ in fn.next_functions)
    del loss
    with torch.no_grad():
        for b, before in buffers:
            b.copy_(before)
    if saved is not None:
        task.load_state_dict(saved)
    return [n for n, p in step.model.named_parameters() if p.requires_grad and id(p) not in reached]


def wrap_for_training(model: torch.nn.Module, task, *, device: torch.device, ddp_cfg, first_batch=None):
    """``TrainStep(model, task)``, wrapped in ``DistributedDataParallel`` when a process group is up.

    ``ddp_cfg.find_unused_parameters``: ``true`` / ``false``, or ``auto``: one graph walk on the first
    batch decides (on any rank), so presets that leave trainable parameters out of the step (e.g. SAM2's
    memory modules in the 2D task) get it and the others keep the cheaper default.
    """
    step = TrainStep(model, task)
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return step
    find = ddp_cfg.find_unused_parameters if ddp_cfg is not None else "auto"
    if str(find) == "auto":
        unused = unused_trainable(step, first_batch, device) if first_batch is not None else []
        flag = torch.tensor([1.0 if unused else 0.0], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        find = bool(flag.item() > 0)
        if unused:
            log.info("DDP: %d trainable parameters unused by the step (e.g. %s)", len(unused), unused[:3])
    elif not isinstance(find, bool):
        raise ValueError(f"trainer.ddp.find_unused_parameters: expected true, false or auto, got {find!r}")
    ddp = DistributedDataParallel(
        step,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=bool(find),
        bucket_cap_mb=float(ddp_cfg.bucket_cap_mb) if ddp_cfg is not None else 25.0,
        gradient_as_bucket_view=True,
    )
    log.info(
        "DistributedDataParallel over %d processes (find_unused_parameters=%s)", dist.get_world_size(), find
    )
    return ddp


# ---------------------------------------------------------------------- sharded evaluation
def gather_by_index(items: list[tuple[int, object]]) -> list[tuple[int, object]] | None:
    """Gather ``(case_index, payload)`` pairs of every rank on rank 0 (``gather_object``), sorted by case
    index: the single-process order. Returns the sorted list on rank 0, None elsewhere; the input
    sorted when no process group is up."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return sorted(items, key=lambda t: t[0])
    out = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(items, out, dst=0)
    if dist.get_rank() != 0:
        return None
    return sorted((t for part in out for t in part), key=lambda t: t[0])


# ---------------------------------------------------------------------- a start that fails on one rank
def agree_on_start(error: BaseException | None) -> None:
    """Every rank calls this once, at the same point of the start (after its set-up, before the first
    collective of training): ``error`` is what stopped this rank's set-up, or None.

    One all-reduce finds the lowest failing rank: that rank returns (its caller re-raises its error, the one
    line of the run); every other rank raises :class:`~medseg.errors.PeerFailed` (exit 2, nothing printed), so
    no rank is left waiting in a collective to die with a gloo traceback. No-op without a process group.
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return
    from medseg.errors import PeerFailed

    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    flag = torch.tensor([float(rank if error is not None else world)], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    first = int(flag.item())
    if first < world and not (error is not None and rank == first):
        raise PeerFailed(f"rank {first} stopped the start")
