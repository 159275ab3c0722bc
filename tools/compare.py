"""Compare finished runs side by side: ``python tools/compare.py RUN_DIR [RUN_DIR ...] --out DIR``.

The command line of :mod:`medseg.eval.compare` (what it reads, checks and writes is documented there);
exits 2 with one line for a problem with the runs (missing files, different splits, mixed HD95 units).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from medseg.eval.compare import CompareError, compare_runs  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0 ok, 2 for a problem with the runs)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], prog="compare.py")
    p.add_argument("run_dirs", nargs="+", help="run folders (Hydra output directories)")
    p.add_argument("--out", required=True, help="folder for comparison.csv/.md, the plot and grids/")
    p.add_argument("--names", default=None, help="comma-separated labels, one per run folder")
    p.add_argument("--epoch", default="best", help="best (default), last, or an epoch number")
    args = p.parse_args(argv)
    names = [n.strip() for n in args.names.split(",")] if args.names else None
    try:
        compare_runs(args.run_dirs, args.out, names=names, epoch=args.epoch)
    except CompareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(Path(args.out) / "comparison.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
