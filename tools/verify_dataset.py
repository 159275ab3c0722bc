"""Check a dataset's files before training: ``python tools/verify_dataset.py dataset=<name> dataset.root=DIR``.

Prints every problem (one line each, starting with the file) and exits 1, or prints "OK: N cases"
and exits 0. ``fast=true`` checks headers only (plus one full case). Imports no torch.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medseg.errors import DataError  # noqa: E402
from medseg.schema import register_schemas  # noqa: E402

register_schemas()  # conf/verify_dataset.yaml builds on its schema (medseg/schema.py)


@hydra.main(config_path="../conf", config_name="verify_dataset", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    from medseg.data.verify import verify_dataset

    try:
        dataset = instantiate(cfg.dataset, strict=False)
    except InstantiationException as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, DataError) else exc
        print(f"ERROR: {cause}", file=sys.stderr)
        sys.exit(2)
    problems = verify_dataset(dataset, fast=bool(cfg.fast))
    n = len(dataset.all_case_ids)
    if problems:
        for p in problems:
            print(p)
        print(f"FAILED: {len(problems)} problem(s) in {dataset.root} ({n} cases listed)")
        sys.exit(1)
    print(f"OK: {n} cases")


if __name__ == "__main__":
    main()
