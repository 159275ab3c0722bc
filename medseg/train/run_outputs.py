"""What a run writes besides its checkpoints, as a mixin of :class:`medseg.train.engine.Engine`:
``metrics.csv`` and ``val_cases.csv`` (appended to when a run resumes in its own folder, started from
the checkpoint's history elsewhere) and ``run_summary.json``."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.distributed as dist

from medseg.eval.tables import append_csv, keep_rows, read_csv, write_csv
from medseg.train.runtime import atomic_write_text

log = logging.getLogger(__name__)


class RunOutputs:
    """Needs ``out_dir``, ``dist``, ``history``, ``epoch``, ``t`` (trainer options), ``run`` (the
    :class:`~medseg.train.contract.RunSpec`) and what ``_write_summary`` reports (``model``, ``device``,
    ``step``, ``best``, ``extra_state``)."""

    def _resume_path(self) -> Path | None:
        """``trainer.resume``: a checkpoint path, or ``auto`` = this run folder's ``checkpoint_last.pth``
        when there is one (a requeued SLURM job starts again in the same folder)."""
        r = self.t.resume
        if not r:
            return None
        if str(r) == "auto":
            last = self.out_dir / "checkpoint_last.pth"
            if last.exists():
                return last
            if not self.run.overwrite:
                from medseg.train.run_folder import check_auto_resume

                check_auto_resume(self.out_dir)  # never a fresh start over an earlier run's results
            return None
        return Path(str(r))

    def _init_tables(self, resumed: Path | None) -> None:
        """A run resumed in its own folder appends to its ``metrics.csv`` / ``val_cases.csv`` (rows after
        the checkpoint, if any, are dropped: they are redone); elsewhere the tables start from the
        checkpoint's history (and the earlier folder's ``val_cases.csv``)."""
        if not self.dist.is_main:
            return
        metrics, cases = self.out_dir / "metrics.csv", self.out_dir / "val_cases.csv"

        def done(r):
            return int(float(r.get("epoch") or 0)) <= self.epoch

        if resumed is not None and resumed.resolve().parent == self.out_dir.resolve():
            n = keep_rows(metrics, done) + keep_rows(cases, done)
            if n:
                log.info("dropped %d table rows written after %s", n, resumed)
            if not metrics.exists():
                self._write_tables()
            return
        for f in (metrics, cases):  # a new run (or a run started again from scratch here)
            f.unlink(missing_ok=True)
        self._write_tables()
        old = resumed.parent / "val_cases.csv" if resumed is not None else None
        if old is not None and old.exists():
            rows = [r for r in read_csv(old) if done(r)]
            if rows:
                write_csv(cases, rows)

    def _add_row(self, row: dict) -> None:
        self.history.append(row)
        self.rows_added = getattr(self, "rows_added", 0) + 1
        if self.dist.is_main:
            append_csv(self.out_dir / "metrics.csv", [self._csv_row(row)])

    def _csv_row(self, r: dict) -> dict:
        pid = (self.extra_state.get("eval_protocol") or {}).get("id")
        # each validation row names the protocol that produced it
        return {**r, "eval_protocol": pid} if pid and any(k.startswith("val/") for k in r) else r

    def _write_tables(self):
        if self.dist.is_main and self.history:
            write_csv(self.out_dir / "metrics.csv", [self._csv_row(r) for r in self.history])

    def _write_summary(self, train_time: float):
        if not self.dist.is_main:
            return
        n_all = sum(p.numel() for p in self.model.parameters())
        n_tr = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        peak = torch.cuda.max_memory_allocated(self.device) / 2**20 if self.device.type == "cuda" else None
        if peak is None:
            try:
                import resource

                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MiB of host RSS
            except Exception:  # pragma: no cover
                peak = None
        last = self.history[-1] if self.history else {}
        info = {
            "model": self.run.model_name,
            "params": n_all,
            "trainable_params": n_tr,
            "train_time_s": train_time,
            "peak_memory_mb": peak,
            "peak_memory_kind": "cuda" if self.device.type == "cuda" else "host_rss",
            "device": str(self.device),
            "steps": self.step,
            "epochs": self.epoch,
            "best": self.best,
            "last": last,
            "weights": self.extra_state.get("weights"),  # where the starting weights came from
            "eval_protocol": self.extra_state.get("eval_protocol"),  # how every score was computed
            "split_file": "splits.json",
        }
        if getattr(self, "test_summary", None):  # test_after_training: the split's test part, scored once
            info["test"] = self.test_summary
        if self.extra_state.get("resume_changes"):  # settings changed on resume and applied
            info["resume_changes"] = self.extra_state["resume_changes"]
        atomic_write_text(self.out_dir / "run_summary.json", json.dumps(info, indent=2, default=float))

    def _score_test(self) -> None:
        """``test_after_training``: score the split's test part once with the best checkpoint's weights
        (the last weights when no validation chose one), like a validation: ``test_cases.csv`` (one row per
        case and class) and ``test_metrics.csv`` (``test/dice`` ...); also in ``run_summary.json``."""
        ctx = getattr(self.task, "ctx", None)
        if ctx is None or (ctx.test_samples is None and ctx.test_cases is None):
            log.warning("test_after_training: the split has no test cases; nothing scored")
            return
        if self.dist.enabled:
            dist.barrier()  # rank 0 has written checkpoint_best.pth
        best = self.out_dir / "checkpoint_best.pth"
        if best.is_file():
            from medseg.train.checkpoint import read_checkpoint, state_dict_of

            self.model.load_state_dict(state_dict_of(read_checkpoint(best), best))
        saved = ctx.val_samples, ctx.val_cases
        ctx.val_samples, ctx.val_cases = ctx.test_samples, ctx.test_cases
        try:
            self.model.eval()
            with torch.no_grad(), torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                summary, rows, _ = self.task.validate(self.model, epoch=self.epoch, vis_dir=None)
        finally:
            ctx.val_samples, ctx.val_cases = saved
        if not self.dist.is_main:
            return
        summary = {f"test/{k.split('/', 1)[-1]}": v for k, v in summary.items()}
        weights = "checkpoint_best.pth" if best.is_file() else "last"
        write_csv(
            self.out_dir / "test_cases.csv", [{"epoch": self.epoch, "weights": weights, **r} for r in rows]
        )
        write_csv(self.out_dir / "test_metrics.csv", [{"epoch": self.epoch, "weights": weights, **summary}])
        self.test_summary = {"weights": weights, **summary}
        if self.writer:
            self.writer.log_scalars(summary, self.step)
        msg = "  ".join(f"{k}={v:.4f}" for k, v in summary.items() if isinstance(v, float))
        print(f"[test, {weights}] {msg}", flush=True)
