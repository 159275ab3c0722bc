"""Timing harness of the benchmarks: one :class:`Bench` context per invocation (device, threads, clock,
the results being written), interleaved timings, cProfile tables and the child-process protocol.

Nothing here is global: every section receives the :class:`Bench` of its run. The child protocol runs one
measurement in a fresh interpreter (``bench/run.py --child <json spec>``), whose last stdout line is the
JSON result; peak RSS is then the child's own.
"""

from __future__ import annotations

import cProfile
import json
import os
import platform
import pstats
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RUN_PY = ROOT / "bench" / "run.py"


@dataclass
class Bench:
    """State of one benchmark invocation, passed to every section.

    Attributes:
        device: where models and tensors live.
        threads: torch threads (also given to child processes).
        quick: the ``--quick`` sizes and repeat counts.
        clock: device type that :meth:`timed` synchronises and autocasts on (``"cuda"`` or ``"cpu"``).
        amp: bf16 autocast around every timed call (CUDA training sections).
        results: the ``bench/results.json`` being filled; :meth:`save` writes it after every measurement.
        results_path, doc_path: output files; ``render`` turns ``results`` into the Markdown page.
        sizes: image sizes of the per-size rows (``--sizes``).
        split: forward+backward time of each step, by side (``"ours"``, ``"bare"``), see :meth:`mark`.
    """

    device: torch.device
    threads: int
    quick: bool = False
    clock: str = "cpu"
    amp: bool = False
    results: dict = field(default_factory=dict)
    results_path: Path | None = None
    doc_path: Path | None = None
    render: Callable[[dict], str] | None = None
    t_start: float = field(default_factory=time.time)
    split: dict[str, list[float]] = field(default_factory=dict)

    sizes: list[int] = field(default_factory=lambda: [64, 128])

    @property
    def gpu(self) -> bool:
        return self.device.type == "cuda"

    @property
    def main_size(self) -> int:
        """Image size of the side-by-side sections (64 px with ``--quick``, else 128)."""
        return 64 if self.quick else 128

    @property
    def warmup(self) -> int:
        return 1 if self.quick else 2

    @property
    def repeats(self) -> int:
        return 3 if self.quick else 5

    # ------------------------------------------------------------------ timing
    def timed(self, fn: Callable[[], object]) -> float:
        """Wall time of ``fn()`` (CUDA synchronised before and after), under bf16 autocast when ``amp``."""
        cuda = self.clock == "cuda"
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with self.autocast():
            fn()
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    def autocast(self):
        """The precision of every timed call: bf16 autocast on ``clock`` when ``amp``."""
        return torch.autocast(self.clock, dtype=torch.bfloat16, enabled=self.amp)

    def peak_memory_mb(self, fn: Callable[[], object]) -> float | None:
        """Peak CUDA memory (MB) of one ``fn()`` under the same autocast as :meth:`timed` (a peak taken
        in fp32 would not be the timed step's: issue 21); None off CUDA."""
        if not self.gpu:
            return None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(self.device)
        with self.autocast():
            fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(self.device) / 2**20

    def guarded(self, measure: Callable[[], dict], **row) -> dict:
        """``measure()``, or ``{**row, "oom": "OOM at N GB"}`` when the device runs out of memory: an OOM is
        a recorded result of its row and the next rows go on (the memory it held is released first)."""
        import gc

        try:
            return measure()
        except torch.cuda.OutOfMemoryError:
            pass  # released below, once the exception (and the frames it holds) is gone
        if self.gpu and torch.cuda.is_available():
            gc.collect()
            torch.cuda.empty_cache()
        self.log(f"  {row}: out of memory")
        return {**row, "oom": f"OOM at {capacity_gb(self.device):.0f} GB"}

    def interleaved(self, fns: dict, warmup: int, repeats: int) -> dict[str, list[float]]:
        """Run every fn ``warmup`` times, then ``repeats`` rounds of A, B, ... ; per-fn timings."""
        for _ in range(warmup):
            for fn in fns.values():
                self.timed(fn)
        out = {k: [] for k in fns}
        for _ in range(repeats):
            for k, fn in fns.items():
                out[k].append(self.timed(fn))
        return out

    def mark(self, key: str, t0: float) -> None:
        """Record the forward+backward part of a step (time since t0) under ``key``."""
        self.split.setdefault(key, []).append(time.perf_counter() - t0)

    def take_split(self, repeats: int) -> dict[str, list[float]]:
        """The last ``repeats`` marks of each side (``ours``, ``bare``); the marks are then cleared."""
        fb = {k: self.split.get(k, [])[-repeats:] for k in ("ours", "bare")}
        self.split.clear()
        return fb

    # ------------------------------------------------------------------ output
    def log(self, msg: str) -> None:
        print(f"[{time.time() - self.t_start:6.1f}s] {msg}", flush=True)

    def save(self) -> None:
        """Write ``results`` (with the wall time so far) and the page rendered from it."""
        self.results["wall_s"] = time.time() - self.t_start
        self.results_path.write_text(json.dumps(self.results, indent=2), encoding="utf-8")
        self.doc_path.write_text(self.render(self.results), encoding="utf-8")


def capacity_gb(device: torch.device) -> float:
    """Memory of ``device`` in GB: the CUDA device's total, else the host's RAM."""
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_properties(device).total_memory / 2**30
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def med(xs: list[float]) -> float:
    return float(statistics.median(xs))


# ====================================================================== memory of this process
def _status_mb(field_name: str) -> float | None:
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    return None


def rss_mb() -> float:
    mb = _status_mb("VmRSS")
    return float("nan") if mb is None else mb


def peak_rss_mb() -> float:
    """Peak RSS of this process image: VmHWM (ru_maxrss would carry the forking parent's peak across exec)."""
    mb = _status_mb("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 if mb is None else mb


# ====================================================================== profiles
def top_profile(fn, n_calls: int = 1, n_rows: int = 14) -> list[dict]:
    """cProfile of ``fn`` (n_calls times): top functions by own time per call."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(n_calls):
        fn()
    prof.disable()
    rows = []
    for (file, line, name), (_, nc, tt, ct, _) in pstats.Stats(prof).stats.items():
        rows.append(
            {
                "function": f"{Path(file).name}:{line}({name})",
                "ncalls": nc,
                "tottime_s": round(tt / n_calls, 4),
                "cumtime_s": round(ct / n_calls, 4),
            }
        )
    rows.sort(key=lambda r: -r["tottime_s"])
    return rows[:n_rows]


def repo_profile(fn, n_rows: int = 16) -> list[dict]:
    """cProfile of one call of ``fn``: our own functions (this repo, bench/ excluded) by cumulative time."""
    prof = cProfile.Profile()
    prof.enable()
    fn()
    prof.disable()
    rows = []
    for (file, line, name), (_, nc, tt, ct, _) in pstats.Stats(prof).stats.items():
        if str(ROOT) in file and "/bench/" not in file and "/.venv/" not in file:
            rows.append(
                {
                    "function": f"{Path(file).relative_to(ROOT)}:{line}({name})",
                    "ncalls": nc,
                    "tottime_s": round(tt, 4),
                    "cumtime_s": round(ct, 4),
                }
            )
    rows.sort(key=lambda r: -r["cumtime_s"])
    return rows[:n_rows]


# ====================================================================== child processes
def run_child(spec: dict, timeout: float = 600) -> dict:
    """Run one measurement (``spec["kind"]``, see bench/sections/__init__.py) in a fresh process.

    Returns its JSON result, or ``{"error": <last stderr line>, **spec}`` when the child failed.
    """
    cmd = [sys.executable, str(RUN_PY), "--child", json.dumps(spec)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(ROOT))
    if p.returncode != 0:
        return {
            "error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"rc={p.returncode}",
            **spec,
        }
    return json.loads(p.stdout.strip().splitlines()[-1])


def child_bench(spec: dict) -> Bench:
    """The context of a child process: its device and threads; wall clock without CUDA sync or autocast
    (as the child protocol always measured)."""
    torch.set_num_threads(int(spec["threads"]))
    return Bench(device=torch.device(spec["device"]), threads=int(spec["threads"]))


# ====================================================================== environment
def device_info(device: torch.device) -> dict:
    name = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                name = line.split(":", 1)[1].strip()
    except OSError:
        pass
    info = {
        "type": device.type,
        "cpu": name,
        "threads": torch.get_num_threads(),
        "logical_cpus": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    info["label"] = (
        f"{info.get('gpu')} + " if device.type == "cuda" else ""
    ) + f"{name}, {info['threads']} threads"
    return info


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("sam2", "monai", "hydra-core", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out
