"""Benchmark suite: our SAM2 code paths against bare SAM2 / Meta's predictor, measured side by side.

    python bench/run.py                 # full run (CPU: ~10 min on 2 threads) -> bench/results.json + docs/BENCHMARKS.md
    python bench/run.py --quick         # shorter run (smaller sizes, fewer repeats)
    python bench/run.py --render-only   # re-render docs/BENCHMARKS.md from bench/results.json
    python bench/run.py --sizes 64,128 --device cpu --threads 2

Every ratio is taken between two timings measured in the same run, interleaved (A, B, A, B, ...)
after warm-up, median of the repeats. Nothing is estimated: a figure that was not measured is absent.
Random weights everywhere (no checkpoint download); for the predictor comparison the mask decoder's
last layers are scaled up (as tests/func_3d/test_parity_3d.py does) so that the masks are non-trivial.

The parts live in the ``bench`` package: ``harness`` (timing, child processes), ``workloads`` and
``steps`` (what is timed), ``sections`` (one module per section), ``report`` (the Markdown page).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results.json"
DOC = ROOT / "docs" / "BENCHMARKS.md"
SECTION_NAMES = ("2d", "3d", "inference", "memory", "per_size", "clips", "mfu", "loader")


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--quick", action="store_true", help="smaller sizes and fewer repeats (~3-4 min on 2 CPU threads)"
    )
    ap.add_argument("--sizes", default=None, help="image sizes of the per-size rows, e.g. 64,128")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: min(2, cpu count) on CPU)"
    )
    ap.add_argument(
        "--render-only", action="store_true", help="re-render docs/BENCHMARKS.md from bench/results.json"
    )
    ap.add_argument(
        "--skip",
        default="",
        help="comma list of sections to skip: " + ",".join(SECTION_NAMES),
    )
    ap.add_argument(
        "--update", action="store_true", help="keep the other sections of an existing results.json"
    )
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--doc", default=str(DOC))
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    a.skip = set(filter(None, a.skip.split(",")))
    unknown = sorted(a.skip - set(SECTION_NAMES))
    if unknown:
        ap.error(
            f"--skip: unknown section(s) {','.join(unknown)}; expected names from {','.join(SECTION_NAMES)}"
        )
    return a


def run_child(spec: dict) -> dict:
    """The measurement of a child process (bench.harness.run_child started it)."""
    from bench.harness import child_bench
    from bench.sections import CHILDREN

    if spec["kind"] not in CHILDREN:
        raise ValueError(f"unknown child kind {spec['kind']!r}; expected one of {sorted(CHILDREN)}")
    return CHILDREN[spec["kind"]](child_bench(spec), spec)


def commands(prev: dict) -> list[str]:
    """The commands that produced the results: those kept from ``prev`` (each once), then this one."""
    argv_s = " ".join(sys.argv[1:])
    this = f".venv/bin/python bench/run.py {argv_s}".rstrip()
    cmds = [
        c for c in prev.get("commands", []) if "--render-only" not in c and c not in ("cd <repo root>", this)
    ]
    return [
        "cd <repo root>",
        *dict.fromkeys(cmds),  # each command once, in the order first run
        this,
        ".venv/bin/python bench/run.py --render-only   # re-render this page from bench/results.json",
    ]


def measure(a: argparse.Namespace) -> int:
    """Run every section not in ``a.skip``, saving results and page after each measurement."""
    import torch

    from bench.harness import Bench, device_info, versions
    from bench.report import render
    from bench.sections import SECTIONS

    device = torch.device(a.device)
    threads = a.threads or (min(2, os.cpu_count() or 1) if device.type == "cpu" else torch.get_num_threads())
    torch.set_num_threads(threads)
    q = a.quick
    sizes = [int(s) for s in (a.sizes or ("64" if q else "64,128")).split(",")]
    t_start = time.time()
    prev = (
        json.loads(Path(a.results).read_text(encoding="utf-8"))
        if a.update and Path(a.results).exists()
        else {}
    )
    r = {
        **prev,
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "mode": "quick" if q else "full",
        "device": device_info(device),
        "versions": versions(),
        "gpu": None,
        "gpu_note": "GPU rows: not measured (no GPU was lent in this session)"
        if device.type == "cpu"
        else None,
    }
    r["commands"] = commands(prev)
    bench = Bench(
        device=device,
        threads=threads,
        quick=q,
        clock=device.type,
        amp=device.type == "cuda",  # bf16 autocast around every timed training call on CUDA
        results=r,
        results_path=Path(a.results),
        doc_path=Path(a.doc),
        render=render,
        sizes=sizes,
        t_start=t_start,
    )
    for name, section in SECTIONS.items():
        if name not in a.skip:
            section(bench)
    bench.save()
    bench.log(f"wrote {a.results} and {a.doc}")
    return 0


def main(argv=None) -> int:
    a = parse_args(argv)
    if a.child:
        print(json.dumps(run_child(json.loads(a.child))))
        return 0
    if a.render_only:
        from bench.report import render

        r = json.loads(Path(a.results).read_text(encoding="utf-8"))
        Path(a.doc).write_text(render(r), encoding="utf-8")
        print(f"rendered {a.doc}")
        return 0
    return measure(a)


if __name__ == "__main__":
    sys.exit(main())
