"""Fine-tune (or, with ``train=false``, evaluate) SAM2 or a baseline on 2D medical images.

    python train_2d.py experiment=kvasir_finetune dataset.root=/data/Kvasir-SEG model.checkpoint=checkpoints/sam2.1_hiera_tiny.pt

See README.md for every option and output file.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import sam2_train  # noqa: F401  (imports sam2 and clears the Hydra state it leaves behind)
from medseg.run.app import run
from medseg.run.cli import user_errors_as_one_line


@hydra.main(config_path="conf", config_name="train_2d", version_base="1.3")
@user_errors_as_one_line
def main(cfg: DictConfig) -> float | None:
    return run(cfg, mode="2d", task_key="task_2d")


if __name__ == "__main__":
    main()
