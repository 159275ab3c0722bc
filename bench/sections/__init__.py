"""One module per benchmark section. ``SECTIONS`` maps each ``--skip`` name to its ``run(bench)``, in the
order a run measures them; ``CHILDREN`` maps a child spec's ``kind`` to the function the fresh process
runs (``bench/run.py --child``)."""

from __future__ import annotations

from bench.sections import clips, inference, loader, memory, mfu, overhead, per_size

SECTIONS = {
    "2d": overhead.run_2d,
    "3d": overhead.run_3d,
    "inference": inference.run,
    "memory": memory.run,
    "per_size": per_size.run,
    "clips": clips.run,
    "mfu": mfu.run,
    "loader": loader.run,
}

CHILDREN = {
    "mem_3d": memory.child,
    "train_2d": per_size.child,
}
