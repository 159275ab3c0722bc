"""Stop cleanly on SIGTERM / SIGUSR1 / SIGINT (and submitit's pre-emption signal): the engine finishes
the current optimizer step, writes ``checkpoint_last.pth`` and ends with one line saying how to resume.

Under submitit the handler submitit installed is chained to after the checkpoint is written, so its
checkpointing protocol (hydra-submitit-launcher's ``checkpoint()`` -> ``DelayedSubmission``) requeues the
job, and the requeued job resumes by itself (``trainer.resume=auto`` in ``launcher=slurm``). A plain
``sbatch`` job (train_slurm.sh) on SIGUSR1 asks SLURM to requeue it (``scontrol requeue``).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading

log = logging.getLogger(__name__)


class RunInterrupted(Exception):
    """Training stopped on a signal after writing its checkpoint; ``str()`` is the line to print."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


def _signals() -> list[int]:
    sigs = [signal.SIGTERM, signal.SIGINT]
    for name in ("SIGUSR1", "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")):
        s = getattr(signal, name, None)
        if s is not None and s not in sigs:
            sigs.append(s)
    return sigs


class PreemptionGuard:
    """Context manager: while active, the signals above only set :attr:`signum`; the engine polls it at
    step boundaries (all ranks agree through one all-reduce). A second Ctrl-C interrupts at once."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame):
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("received %s: stopping after the current step", signal.Signals(signum).name)

    def __enter__(self) -> PreemptionGuard:
        if threading.current_thread() is threading.main_thread():
            for s in _signals():
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, prev in self._previous.items():
            signal.signal(s, prev)
        self._previous.clear()

    def agreed(self, device, distributed: bool) -> int | None:
        """The signal received by any process (one all-reduce, so every rank stops after the same step)."""
        s = float(self.signum or 0)
        if distributed:
            import torch
            import torch.distributed as dist

            t = torch.tensor([s], device=device)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            s = float(t.item())
        return int(s) or None

    def finish(self, signum: int, message: str, *, is_main: bool) -> None:
        """After the checkpoint is written: print ``message``, hand over to a requeue protocol, and raise
        :class:`RunInterrupted` (the entry point exits with 128 + signum)."""
        if is_main:
            print(message, file=sys.stderr, flush=True)
        prev = self._previous.get(signum)
        self.__exit__()
        submitit_sig = getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"), None)
        if os.environ.get("SUBMITIT_EXECUTOR") and signum == submitit_sig and callable(prev):
            prev(signum, None)  # submitit: checkpoint() -> requeue (rank 0), then sys.exit
        elif (
            is_main
            and signum == getattr(signal, "SIGUSR1", None)
            and os.environ.get("SLURM_JOB_ID")
            and not os.environ.get("SUBMITIT_EXECUTOR")
        ):
            job = os.environ["SLURM_JOB_ID"]
            if shutil.which("scontrol"):
                r = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True, check=False)
                log.warning("scontrol requeue %s: %s", job, "ok" if r.returncode == 0 else r.stderr.strip())
        raise RunInterrupted(message, signum)
