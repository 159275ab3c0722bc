"""The engine's external-trainer strategy, as a mixin of :class:`medseg.train.engine.Engine`: a task whose
model trains in a library's own loop (:class:`medseg.train.contract.ExternalTrainer`, YOLO) gets the same
run folder, tables, loggers, validation protocol and checkpoint format as every other family."""

from __future__ import annotations

import time


class ExternalLoop:
    """Needs the engine's ``t``, ``run``, ``task``, ``model``, ``out_dir``, ``device``, ``writer`` and its
    table, validation and checkpoint methods."""

    def _fit_external(self) -> float | None:
        """Training in the task's library loop (:class:`~medseg.train.contract.ExternalTrainer`): its log
        becomes ``metrics.csv`` rows (and logger scalars), then the suite validates the trained network with
        its own protocol and writes ``checkpoint_best.pth`` / ``checkpoint_last.pth`` in its own format."""
        if self.t.resume:
            raise ValueError(
                f"trainer.resume={self.t.resume}: model={self.run.model_name or 'this model'} trains in its "
                "library's own loop, which cannot continue from a checkpoint; start a new run "
                "(model.checkpoint= starts from its weights)"
            )
        self._resume_path()  # resume=auto: refuses a folder holding an earlier run's results
        self._open_writer()
        self._init_tables(None)
        start = time.time()
        self.external_started = True  # from here the library writes into the run folder: kept on failure
        self.model, rows = self.task.fit_external(self.model, self.out_dir, self.device)
        self.optimizer = self.scheduler = None  # the library's: not in our checkpoints
        *earlier, last = [dict(r) for r in rows] or [{"epoch": int(self.t.max_epochs), "step": 0}]
        for row in (*earlier, last):
            if self.writer:
                self.writer.log_scalars({k: v for k, v in row.items() if "/" in k}, int(row.get("step", 0)))
        for row in earlier:
            self._add_row(row)
        self.epoch, self.step = int(last["epoch"]), int(last.get("step", 0))
        last.update(self._validate())
        last["time_s"] = time.time() - start
        self._close_epoch(last)
        return self._finish(start)
