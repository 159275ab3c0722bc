"""Write ``report.html`` of one output folder again: ``python tools/report.py FOLDER [--max-mb 20]``.

FOLDER is a training/evaluation run, an ``inference_3d`` output folder, a ``tools/compare.py`` folder or a
multirun sweep folder (what it holds says which). The page and ``report_files/`` beside it are replaced;
nothing else in the folder is touched. Exits 2 with one line for a folder it cannot report on.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

EXIT_USER_ERROR = 2


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0 ok, 2 for a folder it cannot report on)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], prog="report.py")
    p.add_argument("folder", help="run, inference, comparison or sweep folder")
    p.add_argument(
        "--max-mb", type=float, default=None, help="size budget of the pictures in MB (default 20)"
    )
    p.add_argument("--kind", choices=["run", "inference", "compare", "sweep"], default=None)
    args = p.parse_args(argv)
    from medseg.report import write_report

    try:
        path = write_report(args.folder, kind=args.kind, max_mb=args.max_mb)
    except (FileNotFoundError, ValueError, NotADirectoryError, PermissionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
