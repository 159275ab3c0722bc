"""The one training engine shared by 2D SAM2, 3D SAM2 and the baselines.

The engine takes what it needs, never the whole config (:mod:`medseg.train.contract`): the trainer
options (:class:`medseg.schema.TrainerConfig`), a :class:`~medseg.train.contract.RunSpec` (seed, optimizer and
scheduler builders, loggers, the config record of checkpoints) and a *task*, which supplies the
model-specific parts::

    task.train_dataset              # object with __len__ and get(i, rng) -> sample
    task.collate(samples) -> batch  # batch has .to(device)
    task.training_step(model, batch) -> {"loss": tensor, "<part>": tensor, ...}
    task.validate(model, *, epoch, vis_dir) -> (summary {"val/dice": ...}, rows [{case_id, class, ...}], images)

The engine does the rest: epochs/steps, per-epoch seeded data order (exact resume mid-run),
gradient accumulation and clipping, bf16 autocast on CUDA, validation every ``val_freq`` epochs,
``checkpoint_last.pth`` / ``checkpoint_best.pth`` written atomically, NaN/inf guard, tqdm,
TensorBoard, ``metrics.csv`` / ``val_cases.csv`` (appended to when a run resumes in its own folder), data
parallelism with ``DistributedDataParallel`` over torchrun / SLURM / submitit processes
(``medseg/train/distributed.py``), mid-epoch checkpoints (``trainer.save_every_n_steps``) and a clean stop on
SIGTERM / SIGUSR1 / Ctrl-C that writes ``checkpoint_last.pth`` at the current step
(``medseg/train/preemption.py``).
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from medseg.eval.tables import append_csv, write_csv
from medseg.schema import TrainerConfig
from medseg.train.checkpoint import atomic_torch_save, resume_training, training_state
from medseg.train.contract import ExternalTrainer, RunSpec, Task
from medseg.train.distributed import wrap_for_training
from medseg.train.external import ExternalLoop
from medseg.train.preemption import PreemptionGuard
from medseg.train.run_outputs import RunOutputs
from medseg.train.runtime import DistInfo
from medseg.train.sampling import SeededSamples, epoch_batches

log = logging.getLogger(__name__)


class TrainingError(RuntimeError):
    """Training cannot continue (e.g. NaN loss); the message says why and where the last good checkpoint is."""


class Engine(RunOutputs, ExternalLoop):
    """Fit or evaluate ``model`` with ``task`` under the ``trainer`` options and the ``run`` spec.

    A task that trains in a library's own loop (:class:`~medseg.train.contract.ExternalTrainer`, YOLO) is
    handed the training; the engine keeps the run folder, tables, loggers, validation and checkpoints.
    """

    def __init__(
        self,
        *,
        trainer: TrainerConfig,
        task,
        model: torch.nn.Module,
        out_dir: str | Path,
        device: torch.device,
        run: RunSpec | None = None,
        dist_info: DistInfo | None = None,
        extra_state: dict | None = None,
    ):
        self.task, self.model = task, model
        self.t, self.run = trainer, run or RunSpec()
        self.external = isinstance(task, ExternalTrainer)  # trains in its own loop (see fit)
        if not self.external and not isinstance(task, Task):
            missing = [
                n for n in ("train_dataset", "collate", "training_step", "validate") if not hasattr(task, n)
            ]
            raise TypeError(
                f"{type(task).__name__} is not a task of the engine: it lacks {', '.join(missing)}"
            )
        self.external_started = False
        self.out_dir = Path(out_dir)
        self.device = device
        self.dist = dist_info or DistInfo()
        self.extra_state = extra_state or {}
        self.history: list[dict] = []
        self.epoch = 0
        self.batch_in_epoch = 0
        self.step = 0
        self.train_model = None  # TrainStep(model, task), in DistributedDataParallel when distributed
        self.epoch_progress: dict | None = None  # loss sums of the epoch so far (mid-epoch checkpoints)
        self.best = {"metric": str(self.t.monitor), "value": None, "epoch": None}
        self.writer = None
        self.resume_checkpoint: dict | None = None  # trainer.resume's file, already read by medseg.run.app
        self.steps_done = 0  # optimizer steps and table rows of this start (0: nothing to keep if it fails)
        self.rows_added = 0
        self.amp = bool(self.t.amp) and device.type == "cuda"
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=False
        )  # bf16 needs no scaling; kept for the format

    # ------------------------------------------------------------------ set-up
    def _setup_training(self):
        if self.run.optimizer is None:
            raise ValueError("the engine needs RunSpec.optimizer to train")
        self.optimizer = self.run.optimizer(self.model)
        n = len(self.task.train_dataset)
        if n == 0:
            raise ValueError("the training split is empty: check dataset.root and the split settings")
        per_epoch = len(
            epoch_batches(n, int(self.t.batch_size), self.dist.world_size, 0, 0, self.t.limit_train_batches)
        )
        accum = max(1, int(self.t.accumulate_grad_batches))
        total = math.ceil(per_epoch / accum) * int(self.t.max_epochs)
        if self.t.max_steps:
            total = min(total, int(self.t.max_steps))
        self.total_steps = total
        self.scheduler = self.run.build_scheduler(self.optimizer, total)

    def _open_writer(self):
        """The ``logger=`` backends (RunSpec.loggers), rank 0 only; they receive the run's settings."""
        if self.writer is None:
            self.writer = self.run.loggers(self.out_dir) if self.dist.is_main else None
            if self.writer:
                self.writer.log_hparams(self.run.hparams)

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict:
        return training_state(self)

    def save(self, name: str, *, weights_only: bool = False):
        """Write a checkpoint (:mod:`medseg.train.checkpoint`). ``weights_only`` keeps the model and run
        metadata but not the optimizer, scheduler, scaler and RNG state (``checkpoint_best.pth``)."""
        if self.dist.is_main:
            atomic_torch_save(training_state(self, weights_only=weights_only), self.out_dir / name)

    def resume(self, path: str | Path):
        ck, self.resume_checkpoint = self.resume_checkpoint, None
        resume_training(self, path, ck)

    # ------------------------------------------------------------------ loop
    def _loader(self, batches: list[list[int]], epoch: int):
        bs, r = int(self.t.batch_size), self.dist.rank
        mine = [[(epoch, i) for i in b[r * bs : (r + 1) * bs]] for b in batches]
        nw = int(self.t.num_workers)
        pin = self.device.type == "cuda" if self.t.pin_memory == "auto" else bool(self.t.pin_memory)
        return torch.utils.data.DataLoader(
            SeededSamples(self.task.train_dataset, self.run.seed),
            batch_sampler=mine,
            num_workers=nw,
            collate_fn=self.task.collate,
            pin_memory=pin,
            persistent_workers=False,
            prefetch_factor=2 if nw > 0 else None,
        )

    def _stop(self, guard: PreemptionGuard, signum: int, n_batches: int) -> None:
        last = self.out_dir / "checkpoint_last.pth"
        if self.dist.enabled:
            dist.barrier()  # rank 0 has written the checkpoint
        where = (
            f"batch {self.batch_in_epoch} of {n_batches} in epoch {self.epoch + 1}"
            if self.batch_in_epoch
            else f"the end of epoch {self.epoch}"
        )
        guard.finish(
            signum,
            f"stopped by {signal.Signals(signum).name} after step {self.step} ({where}): wrote {last}; "
            f"resume with trainer.resume={last}",
            is_main=self.dist.is_main,
        )

    def _check_finite(self, parts: dict) -> None:
        bad = torch.tensor([0.0 if torch.isfinite(parts["loss"]).all() else 1.0], device=self.device)
        if self.dist.enabled:
            dist.all_reduce(bad)
        if bad.item() > 0:
            vals = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in parts.items())
            last = self.out_dir / "checkpoint_last.pth"
            where = f"last good checkpoint: {last}" if last.exists() else "no checkpoint was written yet"
            raise TrainingError(
                f"non-finite loss at epoch {self.epoch} step {self.step} ({vals}); stopping, {where}"
            )

    def fit(self) -> float | None:
        """Train for ``trainer.max_epochs``; returns the best value of ``trainer.monitor``."""
        if self.external:
            return self._fit_external()
        self._setup_training()
        resumed = self._resume_path()
        if resumed is not None:
            self.resume(resumed)
        self._open_writer()
        self._init_tables(resumed)
        if self.t.val_before_training and self.step == 0 and not self.history:
            self._add_row({"epoch": 0, "step": 0, **self._validate()})  # the starting point
        start = time.time()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        max_steps = int(self.t.max_steps) if self.t.max_steps else None
        stop_at = int(self.t.stop_after_epochs) + self.epoch if self.t.stop_after_epochs else None
        with PreemptionGuard() as guard:
            while self.epoch < int(self.t.max_epochs) and not (max_steps and self.step >= max_steps):
                if stop_at is not None and self.epoch >= stop_at:
                    log.info(
                        "stopping after %d epochs of this job (trainer.stop_after_epochs); resume with "
                        "trainer.resume=%s",
                        self.t.stop_after_epochs,
                        self.out_dir / "checkpoint_last.pth",
                    )
                    break
                row = self._train_epoch(guard, max_steps)
                if self.epoch % int(self.t.val_freq) == 0 or self.epoch == int(self.t.max_epochs):
                    row.update(self._validate())
                row["time_s"] = time.time() - start
                self._close_epoch(row)
                if self.dist.enabled:
                    dist.barrier()
                signum = guard.agreed(self.device, self.dist.enabled)
                if signum:
                    self._stop(guard, signum, 0)
        return self._finish(start)

    def _close_epoch(self, row: dict) -> None:
        """An epoch's row into ``metrics.csv`` (and loggers' history), the best checkpoint if it is the best,
        then ``checkpoint_last.pth``."""
        self._add_row(row)
        self._maybe_best(row)
        self.save("checkpoint_last.pth")

    def _finish(self, start: float) -> float | None:
        """After the last epoch: the test split once (``test_after_training``), ``run_summary.json``, the
        loggers closed. Returns the best value of ``trainer.monitor``."""
        if self.run.test_after_training:
            self._score_test()
        self._write_summary(time.time() - start)
        if self.writer:
            self.writer.close()
        return self.best["value"]

    def _train_epoch(self, guard: PreemptionGuard, max_steps: int | None) -> dict:
        """One epoch (from ``batch_in_epoch`` on, after a mid-epoch resume); returns its metrics row."""
        accum = max(1, int(self.t.accumulate_grad_batches))
        every = int(self.t.save_every_n_steps or 0)
        batches = epoch_batches(
            len(self.task.train_dataset),
            int(self.t.batch_size),
            self.dist.world_size,
            self.epoch,
            int(self.run.seed),
            self.t.limit_train_batches,
        )
        skip = self.batch_in_epoch
        self.model.train()
        acc = self.epoch_progress or {}
        sums: dict[str, float] = dict(acc.get("sums", {}))
        count, wait = int(acc.get("count", 0)), float(acc.get("wait", 0.0))
        self.epoch_progress = None
        loader = self._loader(batches[skip:], self.epoch)
        bar = tqdm(
            loader,
            total=len(batches) - skip,
            desc=f"epoch {self.epoch}",
            leave=False,
            disable=not (self.dist.is_main and self.t.progress_bar),
        )
        t_wait = time.perf_counter()
        t_epoch = t_wait
        for batch in bar:
            step_wait = time.perf_counter() - t_wait
            wait += step_wait
            batch = batch.to(self.device)
            sync = (self.batch_in_epoch + 1) % accum == 0 or self.batch_in_epoch + 1 == len(batches)
            autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)
            if self.train_model is None:
                with autocast:
                    self.train_model = wrap_for_training(
                        self.model, self.task, device=self.device, ddp_cfg=self.t.ddp, first_batch=batch
                    )
            no_sync = getattr(self.train_model, "no_sync", None)
            with no_sync() if (no_sync and not sync) else contextlib.nullcontext():
                with autocast:
                    parts = self.train_model(batch)
                self._check_finite(parts)
                (parts["loss"] / accum).backward()
            self.batch_in_epoch += 1
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            count += 1
            bar.set_postfix(loss=f"{float(parts['loss'].detach()):.4f}")
            if sync:
                self._optimizer_step()
                if self.dist.is_main and self.writer and self.step % int(self.t.log_every_n_steps) == 0:
                    scalars = {f"train/{k}": float(v.detach()) for k, v in parts.items()}
                    scalars.update(
                        {f"lr/{g.get('name', 'default')}": g["lr"] for g in self.optimizer.param_groups}
                    )
                    scalars["perf/loader_wait_s"] = step_wait
                    self.writer.log_scalars(scalars, self.step)
                finished = bool(max_steps and self.step >= max_steps)
                signum = guard.agreed(self.device, self.dist.enabled)
                if signum or (every and self.step % every == 0 and self.batch_in_epoch < len(batches)):
                    self.epoch_progress = {"sums": dict(sums), "count": count, "wait": wait}
                    self.save("checkpoint_last.pth")  # mid-epoch: resume continues with the next batch
                    self.epoch_progress = None
                if signum:
                    self._stop(guard, signum, len(batches))
                if finished:
                    break
            t_wait = time.perf_counter()
        self.epoch += 1  # epochs completed; row "epoch" N = after N epochs (0 = before training)
        self.batch_in_epoch = 0
        row = {"epoch": self.epoch, "step": self.step}
        row.update({f"train/{k}": v / max(count, 1) for k, v in sums.items()})
        row["lr"] = self.optimizer.param_groups[0]["lr"]
        row["loader_wait_s"] = wait
        row["loader_wait_frac"] = wait / max(time.perf_counter() - t_epoch, 1e-9)
        return row

    def _optimizer_step(self):
        if self.t.gradient_clip_val:
            torch.nn.utils.clip_grad_norm_(
                [p for p in self.model.parameters() if p.requires_grad], float(self.t.gradient_clip_val)
            )
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        self.steps_done += 1

    # ------------------------------------------------------------------ validation
    def _validate(self) -> dict:
        """Every rank validates (the evaluator shards the cases over the ranks, ``medseg.eval.evaluation``);
        rank 0 receives all rows in the single-process order and writes them."""
        self.model.eval()
        vis_dir = self.out_dir / "vis" / f"epoch_{self.epoch:03d}" if self.run.vis else None
        with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            summary, rows, images = self.task.validate(self.model, epoch=self.epoch, vis_dir=vis_dir)
        self.model.train()
        if not self.dist.is_main:
            return {}
        rows = [{"epoch": self.epoch, **r} for r in rows]
        self.last_val_rows = rows
        append_csv(self.out_dir / "val_cases.csv", rows)  # every validation of this run, by epoch
        if self.writer:  # every backend gets the same metrics; images where logger.log_images
            self.writer.log_scalars(summary, self.step)
            self.writer.log_images(images or {}, self.step)
        msg = "  ".join(f"{k}={v:.4f}" for k, v in summary.items() if isinstance(v, float))
        log.info("epoch %d step %d  %s", self.epoch, self.step, msg)
        print(f"[epoch {self.epoch}] {msg}", flush=True)
        return summary

    def _maybe_best(self, row: dict):
        key = str(self.t.monitor)
        v = row.get(key)
        if v is None or not np.isfinite(v):
            return
        better = self.best["value"] is None or (
            v > self.best["value"] if self.t.monitor_mode == "max" else v < self.best["value"]
        )
        if better:
            self.best = {"metric": key, "value": float(v), "epoch": self.epoch}
            self.save("checkpoint_best.pth", weights_only=True)
            if self.dist.is_main and getattr(self, "last_val_rows", None):
                write_csv(self.out_dir / "val_cases_best.csv", self.last_val_rows)

    def evaluate(self) -> dict:
        """Validate once without training (``train=false``): writes metrics.csv and val_cases.csv."""
        if self.external:
            self.model = self.task.load_external(self.model)
        self._open_writer()
        self._init_tables(None)
        start = time.time()
        summary = self._validate()
        self._add_row({"epoch": 0, "step": 0, **summary, "time_s": time.time() - start})
        self._write_summary(0.0)
        if self.writer:
            self.writer.close()
        return summary

    # ------------------------------------------------------------------ outputs
